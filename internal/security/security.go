// Package security checks, on a live host, what mvm's isolation depends on:
// agent keys and their permissions, how each running VMM is confined, the
// accelerator, console and network policies, where guest RAM and secrets
// live, the Docker backend's weaker isolation and the audit trail. Every
// finding says what was found and, when something is wrong, how to fix it.
//
// Checks only read: they never create a key, a directory or a record, so
// `mvmctl security status` stays a read-only verb. docs/security.md is the
// threat model these checks measure the host against.
package security

import (
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/template"
)

// Status of one check. Only Fail makes the report fail.
type Status string

const (
	Pass Status = "pass" // the property holds
	Info Status = "info" // a fact worth knowing, nothing to fix
	Warn Status = "warn" // weaker than it could be; see the fix
	Fail Status = "fail" // a property mvm relies on does not hold
)

// Check is one finding. Detail and Fix may hold guest-influenced text (VM
// and image names, recorded reasons): escape them for a terminal.
type Check struct {
	Status Status `json:"status"`
	Check  string `json:"check"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Report is every finding, in a stable order.
type Report struct {
	Checks []Check `json:"checks"`
	// OK is false when any check failed.
	OK bool `json:"ok"`
}

// ExitCode is the process exit code the report calls for: 1 when any
// check failed, 0 otherwise (warnings do not fail).
func (r Report) ExitCode() int {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return 1
		}
	}
	return 0
}

// Count returns how many checks have status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// FSType returns the filesystem magic number (statfs f_type) of path.
type FSType func(path string) (int64, error)

// Env is everything the checks look at. The CLI fills it from the live
// host (Probe for Host); tests point it at temporary directories and fake
// /proc trees.
type Env struct {
	Dirs paths.Dirs
	// VMs are the VM records, reconciled (vm.Manager.List).
	VMs []*store.Record
	// Networks are the network records; NetworksErr is why some could
	// not be read.
	Networks    []*network.Network
	NetworksErr error
	// Host is what the host offers (Probe).
	Host Host
	// Euid is mvmctl's effective uid: whether QEMU must drop root
	// depends on it. The caller sets it (os.Geteuid()).
	Euid int
	// ProcRoot is where /proc is mounted; "" means /proc.
	ProcRoot string
	// ShmDir is where QEMU puts guest RAM files; "" means /dev/shm, the
	// directory internal/backend/qemu uses.
	ShmDir string
	// Statfs returns a filesystem type; nil uses statfs(2).
	Statfs FSType
	// Trust is config.toml's [trust]; Templates the local templates.
	Trust     config.TrustPolicy
	Templates []*template.Template

	qemuDone  bool
	qemuCache []*qemuVM
}

func (e *Env) procRoot() string {
	if e.ProcRoot == "" {
		return "/proc"
	}
	return e.ProcRoot
}

func (e *Env) shmDir() string {
	if e.ShmDir == "" {
		return "/dev/shm"
	}
	return e.ShmDir
}

func (e *Env) statfs(path string) (int64, error) {
	if e.Statfs != nil {
		return e.Statfs(path)
	}
	return statfsType(path)
}

// checks run in this order; each returns its findings.
var checks = []func(*Env) []Check{
	checkAgentAuth,
	checkPermissions,
	checkQEMUHost,
	checkConfinement,
	checkAccelerator,
	checkConsole,
	checkNetworks,
	checkTemplates,
	checkDocker,
	checkFirecracker,
	checkSecrets,
	checkGuestRAM,
	checkAudit,
}

// Run performs every check. It never fails: problems become checks.
func Run(e *Env) Report {
	var r Report
	for _, c := range checks {
		r.Checks = append(r.Checks, c(e)...)
	}
	r.OK = r.ExitCode() == 0
	return r
}

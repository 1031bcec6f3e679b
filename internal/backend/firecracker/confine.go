package firecracker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Confinement is how a running VM's firecracker process is confined, read
// from /proc rather than from what we meant to do.
type Confinement struct {
	Pid int `json:"pid"`
	// Seccomp is /proc/<pid>/status's mode: 0 off, 1 strict, 2 filter.
	// Firecracker installs its filters on every thread before it runs
	// guest code or serves the API.
	Seccomp int `json:"seccomp"`
	// NoSeccomp and CustomFilter say whether the command line turned the
	// default filter off or replaced it (mvm never does either).
	NoSeccomp    bool `json:"no_seccomp,omitempty"`
	CustomFilter bool `json:"custom_filter,omitempty"`
	// Jailed: the process's root is not the host's (the jailer's chroot).
	Jailed bool `json:"jailed"`
	UID    int  `json:"uid"`
	// StandIn is the test stand-in VMM, which has no seccomp filters or
	// jail of its own to report.
	StandIn bool `json:"stand_in,omitempty"`
	// Jail is the jail mvm set up (root, uid), or why there is none.
	Jail string `json:"jail"`
}

// ConfinementOf reads the confinement of the VM in dir, under procRoot
// ("" for /proc). It fails when the VM does not run.
func ConfinementOf(dir, procRoot string) (Confinement, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	rec, err := readRecord(dir)
	if err != nil {
		return Confinement{}, err
	}
	h := &Handle{dir: dir, rec: rec}
	pid := h.PID()
	if pid <= 0 {
		return Confinement{}, fmt.Errorf("firecracker does not run")
	}
	c := Confinement{Pid: pid, StandIn: rec.StandIn, Jail: "none: " + rec.Unjailed}
	if j := rec.Jail; j != nil {
		c.Jail = fmt.Sprintf("%s as %d:%d", j.Root(), j.UID, j.GID)
	}
	p := filepath.Join(procRoot, strconv.Itoa(pid))
	st, err := os.ReadFile(filepath.Join(p, "status"))
	if err != nil {
		return c, fmt.Errorf("read firecracker process: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(st))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		switch {
		case k == "Seccomp" && len(f) > 0:
			c.Seccomp, _ = strconv.Atoi(f[0])
		case k == "Uid" && len(f) > 1:
			c.UID, _ = strconv.Atoi(f[1]) // effective
		}
	}
	if cl, err := os.ReadFile(filepath.Join(p, "cmdline")); err == nil {
		for _, a := range strings.Split(string(cl), "\x00") {
			c.NoSeccomp = c.NoSeccomp || a == "--no-seccomp"
			c.CustomFilter = c.CustomFilter || a == "--seccomp-filter"
		}
	}
	if root, err := os.Readlink(filepath.Join(p, "root")); err == nil {
		c.Jailed = root != "/"
	}
	return c, nil
}

// Package doctor inspects the host and explains what mvm can run here and
// why: every check says what it found and, when something is missing, how to
// fix it.
package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/kvmprobe"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but slower or with less
	Fail Status = "fail" // something mvm needs is missing
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Report is the whole diagnosis.
type Report struct {
	Checks []Check `json:"checks"`
	// Backend is the automatic backend choice with the reason for every
	// candidate, exactly as `up` would decide it.
	Backend backend.Decision `json:"backend"`
	OK      bool             `json:"ok"` // no check failed
}

// Options carries what the checks need from the caller.
type Options struct {
	Dirs      paths.Dirs
	FindAgent func() (string, error)
	// FindAgentFor finds the agent for a guest arch (vm.FindAgentFor);
	// nil: foreign-arch agents are not checked.
	FindAgentFor func(goarch string) (string, error)
	Networks     *network.Manager // nil: no network checks
}

// Run performs every check. It never fails: problems become checks.
func Run(ctx context.Context, o Options) Report {
	var r Report
	add := func(c Check) { r.Checks = append(r.Checks, c) }
	add(qemuCheck(ctx))
	add(confinementCheck(ctx))
	add(toolCheck("qemu-img", "copy-on-write VM disks", "apt-get install qemu-utils", Warn, "without it each VM gets a full copy of the root disk"))
	add(kvmCheck(ctx))
	add(kernelCheck())
	add(toolCheck("busybox", "the minimal image's userland", "apt-get install busybox-static", Fail, ""))
	add(toolCheck("mkfs.ext4", "building ext4 root and config disks", "apt-get install e2fsprogs", Fail, ""))
	add(toolCheck("debugfs", "reproducible image timestamps", "apt-get install e2fsprogs", Fail, ""))
	add(toolCheck("passt", "the opt-in user-mode stack (MVM_USERNET=passt)", "apt-get install passt", Warn, "user-mode networks use QEMU's built-in stack, the default"))
	add(agentCheck(o.FindAgent))
	for _, a := range foreignArches() {
		add(foreignArchCheck(a, o.FindAgentFor))
	}
	add(supervisorCheck())
	if o.Networks != nil {
		for _, f := range o.Networks.Diagnose() {
			c := Check{Name: f.Name, Status: Fail, Detail: f.Detail, Fix: f.Fix}
			switch {
			case f.OK:
				c.Status = OK
			case f.Warn:
				c.Status = Warn
			}
			add(c)
		}
	}
	add(diskCheck(o.Dirs.Cache, "cache"))
	add(diskCheck(o.Dirs.State, "state"))
	if _, d, err := backend.Select(ctx, ""); err != nil {
		add(Check{Name: "backend", Status: Fail, Detail: err.Error(), Fix: "install QEMU (scripts/setup.sh) or start Docker"})
	} else {
		r.Backend = d
	}
	r.OK = true
	for _, c := range r.Checks {
		if c.Status == Fail {
			r.OK = false
		}
	}
	return r
}

func qemuBinary() string {
	if runtime.GOARCH == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

func qemuCheck(ctx context.Context) Check {
	bin := qemuBinary()
	c := Check{Name: "qemu"}
	p, err := exec.LookPath(bin)
	if err != nil {
		c.Status, c.Detail = Fail, bin+" not found on PATH"
		c.Fix = "apt-get install qemu-system-x86 (or run scripts/setup.sh)"
		if runtime.GOARCH == "arm64" {
			c.Fix = "apt-get install qemu-system-arm (or run scripts/setup.sh)"
		}
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("%s --version failed: %v", p, err), "reinstall QEMU"
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s: %s", p, strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0])
	return c
}

// confinementCheck reports how a new VM's QEMU would be confined (see
// internal/backend/qemu/confine.go): under its seccomp filter and, when
// mvmctl runs as root, as an unprivileged uid.
func confinementCheck(ctx context.Context) Check {
	c := Check{Name: "qemu confinement"}
	if _, err := exec.LookPath(qemuBinary()); err != nil {
		c.Status, c.Detail, c.Fix = Warn, "not checked: "+qemuBinary()+" not found", "install QEMU (see the qemu check)"
		return c
	}
	conf := qemu.ConfinementStatus(ctx)
	who := "as your uid"
	if conf.RunAs != "" {
		who = "as uid:gid " + conf.RunAs + " (-runas), not root"
	}
	switch {
	case conf.Sandbox == "":
		c.Status, c.Detail = Warn, "QEMU runs without a seccomp filter, "+who
		c.Fix = "install a QEMU built with seccomp support on a kernel with CONFIG_SECCOMP_FILTER"
	default:
		c.Status, c.Detail = OK, "QEMU runs under its seccomp filter (-sandbox "+conf.Sandbox+"), "+who
	}
	if len(conf.Notes) > 0 {
		c.Detail += "; " + strings.Join(conf.Notes, "; ")
	}
	return c
}

func kvmCheck(ctx context.Context) Check {
	c := Check{Name: "kvm"}
	usable, reason := kvmprobe.Probe(ctx)
	if usable {
		c.Status, c.Detail = OK, "KVM runs guests: "+reason+"; VMs use hardware acceleration"
		return c
	}
	c.Status = Warn
	c.Detail = "KVM not usable (" + reason + "); VMs run under QEMU TCG software emulation: slower, but real"
	if _, err := os.Stat(kvmprobe.Device); err != nil {
		c.Fix = "enable virtualization in firmware or the hypervisor and load kvm_intel/kvm_amd; or use the Docker backend"
	} else {
		c.Fix = "this host exposes /dev/kvm but cannot run a guest on it (nested or restricted virtualization); nothing to do unless you need speed"
	}
	return c
}

func kernelCheck() Check {
	c := Check{Name: "guest kernel"}
	p, rel, err := image.HostKernel(runtime.GOARCH)
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		c.Fix = "apt-get install linux-image-cloud-" + map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH]
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s (release %s, modules in /lib/modules/%s)", p, rel, rel)
	return c
}

// foreignArches are the guest architectures other than the host's.
func foreignArches() []string {
	var out []string
	for _, a := range []string{"amd64", "arm64"} {
		if a != runtime.GOARCH {
			out = append(out, a)
		}
	}
	return out
}

// foreignArchCheck says whether `up --arch goarch` can work here: such a
// guest is emulated (QEMU TCG, -cpu max, never KVM or hvf; backend qemu
// only), from the kernel and busybox setup put in its arch tree and an
// agent built for it. A Warn at most: nobody needs another arch.
func foreignArchCheck(goarch string, findAgent func(string) (string, error)) Check {
	c := Check{Name: goarch + " guests"}
	var missing []string
	bin := qemu.BinaryFor(goarch)
	if _, err := exec.LookPath(bin); err != nil {
		missing = append(missing, bin)
	}
	kernel, _, kerr := image.HostKernel(goarch)
	if kerr != nil {
		dir, _ := image.ArchDir(goarch)
		missing = append(missing, "a kernel in "+dir)
	}
	agent := "not checked"
	if findAgent != nil {
		p, err := findAgent(goarch)
		if err != nil {
			missing = append(missing, "mvm-agent-"+goarch)
		}
		agent = p
	}
	if len(missing) > 0 {
		c.Status = Warn
		c.Detail = "up --arch " + goarch + " cannot work: missing " + strings.Join(missing, ", ")
		c.Fix = image.SetupArchCommand + " " + goarch + " && make build"
		return c
	}
	c.Status = OK
	c.Detail = fmt.Sprintf("up --arch %s: emulated by %s (TCG, -cpu max; never KVM/hvf), kernel %s, agent %s; backend qemu only, much slower than a host-arch guest",
		goarch, bin, kernel, agent)
	return c
}

func toolCheck(bin, purpose, fix string, missing Status, consequence string) Check {
	c := Check{Name: bin}
	p, err := exec.LookPath(bin)
	if err != nil {
		c.Status, c.Detail, c.Fix = missing, fmt.Sprintf("%s not found (needed for %s)", bin, purpose), fix
		if consequence != "" {
			c.Detail += "; " + consequence
		}
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s (%s)", p, purpose)
	return c
}

func agentCheck(find func() (string, error)) Check {
	c := Check{Name: "mvm-agent"}
	if find == nil {
		c.Status, c.Detail = Warn, "not checked"
		return c
	}
	p, err := find()
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, err.Error(), "make build"
		return c
	}
	c.Status, c.Detail = OK, p+" (static guest agent)"
	return c
}

// supervisorCheck looks for the small per-VM supervisor binary beside the
// running executable; without it mvmctl re-executes itself, which works but
// costs more memory per running VM.
func supervisorCheck() Check {
	c := Check{Name: "mvm-supervisor"}
	self, err := os.Executable()
	if err != nil {
		c.Status, c.Detail = Warn, "cannot locate the running executable: "+err.Error()
		return c
	}
	p := filepath.Join(filepath.Dir(self), supervisor.BinaryName)
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		c.Status = Warn
		c.Detail = p + " not found: each VM's supervisor runs as a copy of mvmctl (about 15 MiB RSS instead of 6)"
		c.Fix = "make build (installs bin/mvm-supervisor next to bin/mvmctl)"
		return c
	}
	c.Status, c.Detail = OK, p+" (per-VM supervisor)"
	return c
}

// diskCheck warns under 2 GiB free and fails under 512 MiB where mvm writes.
func diskCheck(dir, what string) Check {
	c := Check{Name: "disk space (" + what + ")"}
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil {
			break
		}
		parent := probe[:max(strings.LastIndex(probe, "/"), 1)]
		if parent == probe {
			break
		}
		probe = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probe, &st); err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("cannot stat %s: %v", probe, err)
		return c
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	gib := float64(free) / (1 << 30)
	c.Detail = fmt.Sprintf("%.1f GiB free for %s (%s)", gib, dir, what)
	switch {
	case free < 512<<20:
		c.Status, c.Fix = Fail, "free space or point MVM_"+strings.ToUpper(what)+"_DIR elsewhere"
	case free < 2<<30:
		c.Status, c.Fix = Warn, "images and VM disks need a few GiB; free some space"
	default:
		c.Status = OK
	}
	return c
}

package backend

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/kvmprobe"
)

// Candidate is one backend considered by Select, with the verdict.
type Candidate struct {
	Backend string `json:"backend"`
	Mode    string `json:"mode,omitempty"` // e.g. "kvm", "tcg"
	Chosen  bool   `json:"chosen"`
	Usable  bool   `json:"usable"`
	Reason  string `json:"reason"`
}

// Decision explains which backend Select chose and why each other one was
// skipped; doctor and `up -v` print it.
type Decision struct {
	Chosen     string      `json:"chosen"`
	Mode       string      `json:"mode,omitempty"`
	Requested  string      `json:"requested,omitempty"` // --backend / config, if any
	Candidates []Candidate `json:"candidates"`
}

// String renders the decision as lines: "docker: chosen (reason)".
func (d Decision) String() string {
	var b strings.Builder
	for _, c := range d.Candidates {
		name := c.Backend
		if c.Mode != "" {
			name += " (" + c.Mode + ")"
		}
		verdict := "skipped"
		switch {
		case c.Chosen:
			verdict = "chosen"
		case c.Usable:
			verdict = "usable, lower priority"
		}
		fmt.Fprintf(&b, "%s: %s: %s\n", name, verdict, c.Reason)
	}
	return b.String()
}

// Probes are the host facts Select decides on; tests inject fakes.
type Probes struct {
	GOOS string
	// GOARCH is the host's architecture; "" is runtime.GOARCH.
	GOARCH string
	// KVM reports whether KVM really runs guests, and why.
	KVM func(ctx context.Context) (bool, string)
	// HVF reports whether macOS's Hypervisor.framework runs guests, and why.
	HVF func(ctx context.Context) (bool, string)
	// MacOSMajor returns the macOS major version (26 for macOS 26).
	MacOSMajor func(ctx context.Context) (int, error)
	// Lookup returns a registered backend (Get).
	Lookup func(name string) (Backend, error)
	// LookPath finds an executable (exec.LookPath).
	LookPath func(file string) (string, error)
}

// HostProbes are the real probes.
func HostProbes() Probes {
	return Probes{
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		KVM:        kvmprobe.Probe,
		HVF:        kvmprobe.HVF,
		MacOSMajor: macOSMajor,
		Lookup:     Get,
		LookPath:   exec.LookPath,
	}
}

func macOSMajor(ctx context.Context) (int, error) {
	out, err := exec.CommandContext(ctx, "sw_vers", "-productVersion").Output()
	if err != nil {
		return 0, fmt.Errorf("sw_vers: %w", err)
	}
	major, _, _ := strings.Cut(strings.TrimSpace(string(out)), ".")
	return strconv.Atoi(major)
}

// Select picks the backend to run a VM on. With preferred set (--backend or
// the config's default_backend) it is that backend or an error saying why it
// cannot run here. Otherwise it follows the seeds' order, decided by probes:
// usable KVM (Firecracker when installed, else QEMU) → a reachable Docker
// daemon → QEMU with TCG on Linux; Apple Virtualization (macOS 26+) → QEMU
// with hvf → Docker → Lima → QEMU with TCG on macOS. Every candidate is
// probed so the decision explains them all.
func Select(ctx context.Context, preferred string) (Backend, Decision, error) {
	return HostProbes().Select(ctx, preferred)
}

// SelectArch is Select for a guest of goarch ("" = the host's).
func SelectArch(ctx context.Context, preferred, goarch string) (Backend, Decision, error) {
	return HostProbes().SelectArch(ctx, preferred, goarch)
}

// Select is Select with these probes.
func (p Probes) Select(ctx context.Context, preferred string) (Backend, Decision, error) {
	return p.SelectArch(ctx, preferred, "")
}

// SelectArch is SelectArch with these probes. A guest of another
// architecture than the host's runs only emulated: hardware acceleration
// (KVM, hvf) runs the host's own instruction set, so only backends with
// Capabilities.ForeignArch qualify, and QEMU then always uses TCG.
func (p Probes) SelectArch(ctx context.Context, preferred, goarch string) (Backend, Decision, error) {
	if goarch != "" && goarch != p.arch() {
		return p.selectForeign(ctx, preferred, goarch)
	}
	if preferred != "" {
		return p.selectPreferred(ctx, preferred)
	}
	kvmOK, kvmWhy := p.KVM(ctx)
	type step struct {
		name, mode string
		check      func() (Backend, string, error) // backend, reason when usable, reason when not
	}
	needKVM := func(name string) func() (Backend, string, error) {
		return func() (Backend, string, error) {
			if !kvmOK {
				return nil, "", fmt.Errorf("KVM not usable: %s", kvmWhy)
			}
			b, err := p.available(ctx, name)
			return b, "KVM usable: " + kvmWhy, err
		}
	}
	applevz := step{"applevz", "", func() (Backend, string, error) {
		if p.GOOS != "darwin" {
			return nil, "", fmt.Errorf("not macOS")
		}
		// Said first: on a Mac new enough for it, "not implemented" is
		// the answer that matters, not the version.
		if _, err := p.Lookup("applevz"); err != nil {
			return nil, "", errors.New("not implemented in this build (Apple Virtualization framework)")
		}
		v, err := p.MacOSMajor(ctx)
		if err != nil {
			return nil, "", err
		}
		if v < 26 {
			return nil, "", fmt.Errorf("needs macOS 26 or newer, host has %d", v)
		}
		b, err := p.available(ctx, "applevz")
		return b, fmt.Sprintf("macOS %d", v), err
	}}
	docker := step{"docker", "", func() (Backend, string, error) {
		b, err := p.available(ctx, "docker")
		return b, "daemon reachable", err
	}}
	tcg := step{"qemu", "tcg", func() (Backend, string, error) {
		b, err := p.available(ctx, "qemu")
		why := kvmWhy
		if p.GOOS == "darwin" {
			_, why = p.hvf(ctx)
		}
		return b, "software emulation (slow but works everywhere); " + accelWord(p.GOOS) + ": " + why, err
	}}
	var steps []step
	if p.GOOS == "darwin" {
		// KVM and Firecracker are Linux-only: not listed here.
		steps = []step{applevz,
			{"qemu", "hvf", func() (Backend, string, error) {
				ok, why := p.hvf(ctx)
				if !ok {
					return nil, "", fmt.Errorf("hvf not usable: %s", why)
				}
				b, err := p.available(ctx, "qemu")
				return b, "hvf usable: " + why, err
			}},
			docker,
			{"lima", "", func() (Backend, string, error) {
				b, err := p.available(ctx, "lima")
				return b, "Linux VM via Lima", err
			}},
			tcg}
	} else {
		steps = []step{
			{"firecracker", "kvm", func() (Backend, string, error) {
				if _, err := p.LookPath("firecracker"); err != nil {
					return nil, "", fmt.Errorf("firecracker not installed")
				}
				return needKVM("firecracker")()
			}},
			{"qemu", "kvm", needKVM("qemu")},
			applevz, docker, tcg}
	}

	var d Decision
	var chosen Backend
	for _, s := range steps {
		c := Candidate{Backend: s.name, Mode: s.mode}
		b, why, err := s.check()
		if err != nil {
			c.Reason = err.Error()
		} else {
			c.Usable, c.Reason = true, why
			if chosen == nil {
				chosen, c.Chosen = b, true
				d.Chosen, d.Mode = s.name, s.mode
			}
		}
		d.Candidates = append(d.Candidates, c)
	}
	if chosen == nil {
		return nil, d, fmt.Errorf("no usable backend on this host:\n%s", d)
	}
	return chosen, d, nil
}

// arch is the host's GOARCH as the probes see it.
func (p Probes) arch() string {
	if p.GOARCH != "" {
		return p.GOARCH
	}
	return runtime.GOARCH
}

// selectForeign picks a backend that emulates goarch: the preferred one if
// it can, else the first registered candidate that can, in the usual order.
func (p Probes) selectForeign(ctx context.Context, preferred, goarch string) (Backend, Decision, error) {
	d := Decision{Requested: preferred}
	names := []string{preferred}
	if preferred == "" {
		names = []string{"firecracker", "applevz", "docker", "qemu"}
	}
	var chosen Backend
	for _, name := range names {
		c := Candidate{Backend: name}
		b, err := p.available(ctx, name)
		switch {
		case err != nil:
			c.Reason = err.Error()
		case !b.Capabilities().ForeignArch:
			c.Reason = fmt.Sprintf("cannot run %s guests on this %s host (it does not emulate another architecture; use --backend qemu)", goarch, p.arch())
		default:
			c.Usable, c.Mode = true, "tcg"
			c.Reason = fmt.Sprintf("%s guest on a %s host: emulated (TCG); KVM and hvf run only the host's architecture", goarch, p.arch())
			if chosen == nil {
				chosen, c.Chosen = b, true
				d.Chosen, d.Mode = name, c.Mode
			}
		}
		d.Candidates = append(d.Candidates, c)
	}
	if chosen == nil {
		if preferred != "" {
			return nil, d, fmt.Errorf("backend %s cannot run %s guests here: %s", preferred, goarch, d.Candidates[0].Reason)
		}
		return nil, d, fmt.Errorf("no backend on this host runs %s guests:\n%s", goarch, d)
	}
	return chosen, d, nil
}

// hvf is p.HVF, or "not probed" when the probes have none (tests).
func (p Probes) hvf(ctx context.Context) (bool, string) {
	if p.HVF == nil {
		return false, "not probed"
	}
	return p.HVF(ctx)
}

// accelWord names the hardware accelerator of goos.
func accelWord(goos string) string {
	if goos == "darwin" {
		return "hvf"
	}
	return "KVM"
}

// available looks a backend up and probes it; "not implemented" when this
// build has none by that name.
func (p Probes) available(ctx context.Context, name string) (Backend, error) {
	b, err := p.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("not implemented in this build")
	}
	if err := b.Available(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (p Probes) selectPreferred(ctx context.Context, name string) (Backend, Decision, error) {
	d := Decision{Requested: name}
	c := Candidate{Backend: name}
	b, err := p.Lookup(name)
	if err == nil {
		err = b.Available(ctx)
	}
	if err != nil {
		c.Reason = err.Error()
		d.Candidates = append(d.Candidates, c)
		return nil, d, fmt.Errorf("backend %s is not usable: %w", name, err)
	}
	c.Chosen, c.Usable, c.Reason = true, true, "requested"
	d.Chosen = name
	if name == "qemu" {
		if ok, why := p.KVM(ctx); ok {
			c.Mode = "kvm"
		} else if ok, _ := p.hvf(ctx); ok {
			c.Mode = "hvf"
		} else {
			c.Mode, c.Reason = "tcg", "requested; KVM not usable: "+why
		}
		d.Mode = c.Mode
	}
	d.Candidates = append(d.Candidates, c)
	return b, d, nil
}

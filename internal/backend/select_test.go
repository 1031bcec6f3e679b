package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeBackend is a registered backend whose probe gives err.
type fakeBackend struct {
	name string
	err  error
	caps Capabilities
}

func (f *fakeBackend) Name() string                                { return f.name }
func (f *fakeBackend) Capabilities() Capabilities                  { return f.caps }
func (f *fakeBackend) Available(context.Context) error             { return f.err }
func (f *fakeBackend) Start(context.Context, Spec) (Handle, error) { return nil, errors.New("fake") }
func (f *fakeBackend) Open(string) (Handle, error)                 { return nil, errors.New("fake") }

type host struct {
	goos        string
	kvm         bool
	hvf         bool
	macOS       int
	firecracker bool
	backends    map[string]error // registered backends and their Available result
}

func (h host) probes() Probes {
	return Probes{
		GOOS: h.goos,
		KVM: func(context.Context) (bool, string) {
			if h.kvm {
				return true, "vCPU ran the probe"
			}
			return false, "vCPU run failed"
		},
		HVF: func(context.Context) (bool, string) {
			if h.hvf {
				return true, "kern.hv_support=1"
			}
			return false, "kern.hv_support=0"
		},
		MacOSMajor: func(context.Context) (int, error) { return h.macOS, nil },
		Lookup: func(name string) (Backend, error) {
			err, ok := h.backends[name]
			if !ok {
				return nil, fmt.Errorf("unknown backend %q", name)
			}
			// Only QEMU emulates other architectures, as the real ones.
			return &fakeBackend{name: name, err: err, caps: Capabilities{ForeignArch: name == "qemu"}}, nil
		},
		LookPath: func(f string) (string, error) {
			if f == "firecracker" && h.firecracker {
				return "/usr/bin/firecracker", nil
			}
			return "", errors.New("not found")
		},
	}
}

func TestSelectOrder(t *testing.T) {
	noDocker := errors.New("docker daemon not running")
	tests := []struct {
		name      string
		host      host
		want      string // backend (mode)
		reasons   map[string]string
		wantError bool
	}{
		{
			name: "kvm + firecracker",
			host: host{goos: "linux", kvm: true, firecracker: true, backends: map[string]error{"firecracker": nil, "qemu": nil, "docker": nil}},
			want: "firecracker (kvm)",
		},
		{
			name:    "kvm, firecracker installed but not in this build",
			host:    host{goos: "linux", kvm: true, firecracker: true, backends: map[string]error{"qemu": nil, "docker": nil}},
			want:    "qemu (kvm)",
			reasons: map[string]string{"firecracker (kvm)": "not implemented"},
		},
		{
			name:    "kvm without firecracker",
			host:    host{goos: "linux", kvm: true, backends: map[string]error{"qemu": nil, "docker": nil}},
			want:    "qemu (kvm)",
			reasons: map[string]string{"firecracker (kvm)": "firecracker not installed"},
		},
		{
			name: "this host: broken kvm, docker up",
			host: host{goos: "linux", backends: map[string]error{"qemu": nil, "docker": nil}},
			want: "docker",
			reasons: map[string]string{
				"qemu (kvm)": "KVM not usable: vCPU run failed",
				"applevz":    "not macOS",
				"qemu (tcg)": "software emulation",
			},
		},
		{
			name:    "no kvm, no docker: qemu tcg",
			host:    host{goos: "linux", backends: map[string]error{"qemu": nil, "docker": noDocker}},
			want:    "qemu (tcg)",
			reasons: map[string]string{"docker": "docker daemon not running"},
		},
		{
			name:    "macOS 26",
			host:    host{goos: "darwin", macOS: 26, backends: map[string]error{"applevz": nil, "docker": nil}},
			want:    "applevz",
			reasons: map[string]string{"lima": "not implemented"},
		},
		{
			name:    "macOS 15 with docker",
			host:    host{goos: "darwin", macOS: 15, backends: map[string]error{"applevz": nil, "docker": nil}},
			want:    "docker",
			reasons: map[string]string{"applevz": "needs macOS 26 or newer, host has 15"},
		},
		{
			name: "macOS 26, this build: qemu with hvf",
			host: host{goos: "darwin", macOS: 26, hvf: true, backends: map[string]error{"qemu": nil, "docker": nil}},
			want: "qemu (hvf)",
			reasons: map[string]string{
				"applevz":    "not implemented in this build (Apple Virtualization framework)",
				"docker":     "daemon reachable",
				"lima":       "not implemented",
				"qemu (tcg)": "hvf: kern.hv_support=1",
			},
		},
		{
			name: "macOS without hvf: docker",
			host: host{goos: "darwin", macOS: 15, backends: map[string]error{"qemu": nil, "docker": nil}},
			want: "docker",
			reasons: map[string]string{
				"applevz":    "not implemented in this build",
				"qemu (hvf)": "hvf not usable: kern.hv_support=0",
			},
		},
		{
			name:    "macOS, no docker, no hvf: qemu tcg",
			host:    host{goos: "darwin", macOS: 15, backends: map[string]error{"qemu": nil, "docker": noDocker}},
			want:    "qemu (tcg)",
			reasons: map[string]string{"qemu (hvf)": "hvf not usable"},
		},
		{
			name:      "nothing usable",
			host:      host{goos: "linux", backends: map[string]error{"qemu": errors.New("qemu-system-x86_64 not found")}},
			wantError: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, d, err := tt.host.probes().Select(context.Background(), "")
			if tt.wantError {
				if err == nil || !strings.Contains(err.Error(), "no usable backend") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := d.Chosen
			if d.Mode != "" && d.Chosen != "docker" && d.Chosen != "applevz" {
				got += " (" + d.Mode + ")"
			}
			if got != tt.want || b.Name() != d.Chosen {
				t.Fatalf("chose %s (backend %s), want %s\n%s", got, b.Name(), tt.want, d)
			}
			chosen := 0
			seen := map[string]bool{}
			for _, c := range d.Candidates {
				if c.Chosen {
					chosen++
				}
				if c.Reason == "" {
					t.Errorf("%s has no reason", c.Backend)
				}
				key := c.Backend
				if c.Mode != "" {
					key += " (" + c.Mode + ")"
				}
				seen[key] = true
				if want, ok := tt.reasons[key]; ok && !strings.Contains(c.Reason, want) {
					t.Errorf("%s reason %q, want it to contain %q", key, c.Reason, want)
				}
			}
			for key := range tt.reasons {
				if !seen[key] {
					t.Errorf("no candidate %s\n%s", key, d)
				}
			}
			if chosen != 1 {
				t.Errorf("%d candidates chosen", chosen)
			}
		})
	}
}

func TestSelectPreferred(t *testing.T) {
	h := host{goos: "linux", backends: map[string]error{"qemu": nil, "docker": errors.New("permission denied")}}
	b, d, err := h.probes().Select(context.Background(), "qemu")
	if err != nil || b.Name() != "qemu" || d.Mode != "tcg" || d.Requested != "qemu" {
		t.Fatalf("qemu: %v %+v", err, d)
	}
	if _, _, err := h.probes().Select(context.Background(), "docker"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("docker: %v", err)
	}
	if _, _, err := h.probes().Select(context.Background(), "nope"); err == nil {
		t.Error("unknown backend accepted")
	}
}

func TestDecisionString(t *testing.T) {
	d := Decision{Chosen: "docker", Candidates: []Candidate{
		{Backend: "qemu", Mode: "kvm", Reason: "KVM not usable: x"},
		{Backend: "docker", Chosen: true, Usable: true, Reason: "daemon reachable"},
		{Backend: "qemu", Mode: "tcg", Usable: true, Reason: "software emulation"},
	}}
	want := "qemu (kvm): skipped: KVM not usable: x\ndocker: chosen: daemon reachable\nqemu (tcg): usable, lower priority: software emulation\n"
	if got := d.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

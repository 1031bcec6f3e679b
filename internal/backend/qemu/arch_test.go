package qemu

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
)

// foreignArch is the guest arch that is not the host's.
func foreignArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func TestAccelerationNeverForForeignArch(t *testing.T) {
	old := probeAccel
	t.Cleanup(func() { probeAccel = old })
	tests := []struct {
		name         string
		garch        string
		kvm, hvf     bool // what the host offers
		wantK, wantH bool
	}{
		{"host arch with KVM", runtime.GOARCH, true, false, true, false},
		{"host arch with hvf", runtime.GOARCH, false, true, false, true},
		{"host arch, neither", runtime.GOARCH, false, false, false, false},
		{"foreign arch with KVM", foreignArch(), true, false, false, false},
		{"foreign arch with hvf", foreignArch(), false, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probeAccel = func(context.Context) (bool, bool) { return tt.kvm, tt.hvf }
			k, h := acceleration(context.Background(), tt.garch)
			if k != tt.wantK || h != tt.wantH {
				t.Fatalf("acceleration(%s) = kvm %v hvf %v, want %v %v", tt.garch, k, h, tt.wantK, tt.wantH)
			}
		})
	}
}

// An arm64 guest (on any host) gets qemu-system-aarch64's virt machine,
// TCG with -cpu max, the PL011 console and no x86 clock argument.
func TestArgvArm64Guest(t *testing.T) {
	l := baseLaunch()
	l.Arch, l.KVM, l.HVF, l.TSCKHz = "arm64", false, false, 2500000
	argv, err := buildArgv(l)
	if err != nil {
		t.Fatal(err)
	}
	if argv[0] != "qemu-system-aarch64" {
		t.Errorf("binary %s, want qemu-system-aarch64", argv[0])
	}
	for flag, want := range map[string]string{"-accel": "tcg", "-cpu": "max"} {
		if got := values(argv, flag); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %v, want %s", flag, got, want)
		}
	}
	if m := values(argv, "-M"); len(m) != 1 || !strings.HasPrefix(m[0], "virt,") {
		t.Errorf("-M = %v, want the virt machine", m)
	}
	app := strings.Join(values(argv, "-append"), " ")
	if !strings.Contains(app, "console=ttyAMA0") || strings.Contains(app, "tsc_early_khz") {
		t.Errorf("-append %q: want console=ttyAMA0 and no tsc_early_khz", app)
	}
	joined := strings.Join(argv, " ")
	for _, bad := range []string{"kvm", "hvf", "-enable-kvm", "microvm", "-cpu host"} {
		if strings.Contains(joined, bad) {
			t.Errorf("argv contains %q: %s", bad, joined)
		}
	}
}

func TestGuestArch(t *testing.T) {
	tests := []struct {
		arch, want, wantErr string
	}{
		{"", runtime.GOARCH, ""},
		{"arm64", "arm64", ""},
		{"amd64", "amd64", ""},
		{"riscv64", "", "no QEMU machine known for riscv64"},
	}
	for _, tt := range tests {
		got, err := guestArch(backend.Spec{Arch: tt.arch})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("guestArch(%q) err = %v, want %q", tt.arch, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("guestArch(%q) = %q, %v; want %q", tt.arch, got, err, tt.want)
		}
	}
}

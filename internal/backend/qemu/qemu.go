// Package qemu runs VMs on QEMU's microvm machine (x86_64; virt on arm64),
// with KVM when a real probe says it works and TCG otherwise. A per-VM
// supervisor process owns QEMU, so VMs outlive the CLI; everything a handle
// needs is recorded in the VM directory.
package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/kvmprobe"
)

// Name is the backend's canonical name.
const Name = "qemu"

// Backend starts QEMU VMs.
type Backend struct{}

var _ backend.Backend = (*Backend)(nil)

func init() { backend.Register(&Backend{}) }

// Name implements backend.Backend.
func (*Backend) Name() string { return Name }

// Capabilities implements backend.Backend. Vsock needs working KVM and the
// host's vhost-vsock device; otherwise the agent is reached over virtio-serial.
func (*Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		Pause:       true,
		Console:     true,
		Snapshot:    true,
		Vsock:       vsockUsable(context.Background()),
		ForeignArch: true, // TCG emulates any arch in arches
	}
}

func vsockUsable(ctx context.Context) bool {
	if ok, _ := kvmprobe.Probe(ctx); !ok {
		return false
	}
	_, err := os.Stat(vhostVsock)
	return err == nil
}

// Available implements backend.Backend: QEMU must be installed; KVM is optional.
func (*Backend) Available(ctx context.Context) error {
	a, ok := arches[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("qemu backend: unsupported host architecture %s", runtime.GOARCH)
	}
	if _, err := exec.LookPath(a.Binary); err != nil {
		if runtime.GOOS == "darwin" {
			return fmt.Errorf("qemu backend: %s not found (Homebrew: brew install qemu)", a.Binary)
		}
		return fmt.Errorf("qemu backend: %s not found (Debian/Ubuntu: apt install %s)", a.Binary, debPackage())
	}
	return nil
}

func debPackage() string { return debPackageFor(runtime.GOARCH) }

// debPackageFor is the Debian package with the QEMU for goarch guests.
func debPackageFor(goarch string) string {
	if goarch == "arm64" {
		return "qemu-system-arm"
	}
	return "qemu-system-x86"
}

// guestArch is spec's guest architecture: its own, else the host's.
func guestArch(spec backend.Spec) (string, error) {
	a := spec.Arch
	if a == "" {
		a = runtime.GOARCH
	}
	if _, ok := arches[a]; !ok {
		return "", fmt.Errorf("no QEMU machine known for %s guests (supported: amd64, arm64)", a)
	}
	return a, nil
}

// BinaryFor names the QEMU executable that runs goarch guests ("" if none).
func BinaryFor(goarch string) string { return arches[goarch].Binary }

// binaryFor finds the QEMU that runs goarch guests, with how to install it.
func binaryFor(goarch string) (string, error) {
	bin := arches[goarch].Binary
	p, err := exec.LookPath(bin)
	if err != nil {
		hint := "apt install " + debPackageFor(goarch)
		if runtime.GOOS == "darwin" {
			hint = "brew install qemu"
		}
		return "", fmt.Errorf("%s not found for %s guests (%s)", bin, goarch, hint)
	}
	return p, nil
}

// Accelerator reports what Start would use and why, for doctor.
func Accelerator(ctx context.Context) (accel, reason string) {
	ok, why := kvmprobe.Probe(ctx)
	if ok {
		return "kvm", why
	}
	if hvf, hwhy := kvmprobe.HVF(ctx); hvf {
		return "hvf", hwhy
	}
	return "tcg", why
}

// Open implements backend.Backend.
func (*Backend) Open(dir string) (backend.Handle, error) {
	rec, err := readRecord(dir)
	if err != nil {
		return nil, fmt.Errorf("open qemu vm %s: %w", dir, err)
	}
	return &Handle{dir: dir, rec: rec}, nil
}

// Package backend is the seam between VM lifecycle verbs and the VMMs that run
// guests. A backend starts a VM from a Spec and returns a Handle; the handle
// operates the running VM. Callers never switch on the backend's type: they ask
// Capabilities() and get a clear error for what is missing.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Capabilities says which optional verbs a backend supports.
type Capabilities struct {
	Pause         bool `json:"pause"`
	Snapshot      bool `json:"snapshot"`
	Vsock         bool `json:"vsock"`
	TapNetworking bool `json:"tap_networking"`
	Console       bool `json:"console"`
	// ForeignArch: runs guests of another architecture than the host's
	// (by emulation; QEMU's TCG). Others refuse a Spec.Arch not the host's.
	ForeignArch bool `json:"foreign_arch"`
}

// Disk is one block device attached to the guest.
type Disk struct {
	ID       string // stable device id, e.g. "root", "config"
	Path     string
	Format   string // "raw" or "qcow2"
	ReadOnly bool
}

// Spec is everything a backend needs to boot one VM. Paths are absolute.
type Spec struct {
	Name string
	// Arch is the guest's GOARCH; "" is the host's. Only backends with
	// Capabilities.ForeignArch accept another.
	Arch      string
	Dir       string // per-VM directory owned by the VM: sockets, logs, overlays
	Kernel    string
	Initrd    string
	Cmdline   string // extra kernel arguments appended to the backend's own
	CPUs      int
	MemoryMiB int
	Disks     []Disk // in attach order; Disks[0] is the root disk
	// RootImage is the immutable cached rootfs; the backend makes its own
	// copy-on-write disk from it inside Dir and never writes the cached file.
	RootImage string
	ConfigISO string // config drive image (ext4), attached read-only
	SerialLog string // where guest console output goes
	// ImageDigest is the image's content digest ("sha256:<hex>"); backends
	// that convert the rootfs (docker) key their cache on it.
	ImageDigest string
	// Guest is the config the agent reads. Backends without a config drive
	// (docker) deliver it themselves and set Guest.Transport to what they
	// provide; others may ignore it and use ConfigISO.
	Guest *guestcfg.Config
	// NICs are the guest's network interfaces, in order; none means the
	// guest has only lo.
	NICs []NIC
	// Publish lists host ports forwarded to the guest while it runs.
	Publish []Publish
}

// NIC is one guest network interface and the host side it is wired to.
type NIC struct {
	ID  string // device id, e.g. "net0"
	MAC string
	// TAP is an existing host TAP device to open (bridged networks).
	TAP string `json:",omitempty"`
	// User selects the VMM's own user-mode stack instead of a TAP.
	User *UserNet `json:",omitempty"`
	// Network names what the NIC is on, for backends that attach to
	// networks by name (Docker) and for messages.
	Network string `json:",omitempty"`
	IP      string `json:",omitempty"`
}

// UserNet is user-mode networking: the guest at GuestIP behind the VMM's
// NAT, with host ports forwarded by the VMM itself.
type UserNet struct {
	Subnet, Gateway, DNS, GuestIP string
	Forwards                      []Publish
	// MTU is the guest's; passt needs to be told it.
	MTU int `json:",omitempty"`
}

// Publish is one published port.
type Publish struct {
	Proto     string // tcp or udp
	HostIP    string
	HostPort  int
	GuestIP   string
	GuestPort int
}

// Handle operates one VM. Implementations must be usable from a fresh process:
// everything they need is derived from the VM directory.
type Handle interface {
	// State reports what the VMM says about the VM right now.
	State(ctx context.Context) (State, error)
	// Stop asks the guest to shut down, waits up to timeout, then forces it.
	Stop(ctx context.Context, timeout time.Duration) error
	// Kill stops the VMM at once.
	Kill(ctx context.Context) error
	// DialAgent returns a fresh byte stream to the guest agent.
	DialAgent(ctx context.Context) (net.Conn, error)
}

// Pauser is implemented by handles whose backend has Capabilities.Pause.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Remover is implemented by handles that leave something outside the VM
// directory (a container, a registered machine). Remove deletes it; it is
// idempotent and kills a VM that still runs. Callers call it from rm for
// every VM of such a backend, whatever its state.
type Remover interface {
	Remove(ctx context.Context) error
}

// Snapshotter is implemented by handles whose backend has
// Capabilities.Snapshot.
type Snapshotter interface {
	// Snapshot saves the VM's RAM and device state and a copy of its
	// writable disks into dst, a directory that must not exist yet. The VM
	// is paused while it is saved and left as it was found (running or
	// paused) afterwards, also when saving fails.
	Snapshot(ctx context.Context, dst string) error
}

// Restorer is implemented by backends whose Capabilities.Snapshot is set.
type Restorer interface {
	// Restore boots a new VM from the snapshot in snapDir, with its own
	// spec.Dir, spec.Name, spec.ConfigISO and spec.SerialLog and its own
	// copy-on-write disks over the snapshot's. Machine shape (kernel,
	// cpus, memory, devices) comes from the snapshot: a spec asking for
	// other values gets the snapshot's, with a logged warning. The VM runs
	// when Restore returns.
	Restore(ctx context.Context, spec Spec, snapDir string) (Handle, error)
}

// State is the VMM's view of a VM.
type State string

const (
	StateCreating State = "creating"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// Backend starts VMs.
type Backend interface {
	Name() string
	Capabilities() Capabilities
	// Available probes the host and returns nil, or an error saying what is
	// missing and how to fix it.
	Available(ctx context.Context) error
	// Start boots the VM described by spec. It returns once the VMM runs; the
	// VM outlives the calling process. Waiting for the agent is the caller's job.
	Start(ctx context.Context, spec Spec) (Handle, error)
	// Open returns a handle for a VM this backend started earlier, given its dir.
	Open(dir string) (Handle, error)
}

// ErrUnsupported is wrapped by errors for verbs a backend cannot do.
var ErrUnsupported = errors.New("not supported by this backend")

// Unsupported builds the error for a missing capability.
func Unsupported(backendName, capability string) error {
	return fmt.Errorf("backend %q does not support %s: %w", backendName, capability, ErrUnsupported)
}

// RefuseForeignArch is what a backend without Capabilities.ForeignArch
// says to a spec for another architecture than the host's.
func RefuseForeignArch(name string, spec Spec) error {
	if spec.Arch == "" || spec.Arch == runtime.GOARCH {
		return nil
	}
	return fmt.Errorf("backend %s cannot run %s guests on this %s host: only qemu emulates another architecture (use --backend qemu)", name, spec.Arch, runtime.GOARCH)
}

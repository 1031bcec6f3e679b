// Package firecracker runs VMs on Firecracker, driven through its API
// socket by our own client (./api). The per-VM supervisor owns the
// firecracker process, so VMs outlive the CLI; the guest agent is reached
// over hybrid vsock (CONNECT <port> on the VM's vsock socket).
//
// The binary is $MVM_FIRECRACKER_BIN, else firecracker on PATH. Tests point
// the variable at a stand-in that enforces Firecracker's API and runs the
// guest on QEMU (./standin), so the backend is verified against the API
// contract on hosts without KVM; see docs/firecracker.md.
package firecracker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/firecracker/api"
	"github.com/mvm-dev/mvm/internal/kvmprobe"
)

// Name is the backend's canonical name.
const Name = "firecracker"

// EnvBinary names the firecracker executable to run instead of the one on
// PATH (a specific release, or the test stand-in).
const EnvBinary = "MVM_FIRECRACKER_BIN"

// Backend starts Firecracker VMs.
type Backend struct{}

var _ backend.Backend = (*Backend)(nil)

func init() { backend.Register(&Backend{}) }

// Name implements backend.Backend.
func (*Backend) Name() string { return Name }

// Capabilities implements backend.Backend.
func (*Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{Pause: true, Snapshot: true, Vsock: true, TapNetworking: true, Console: true}
}

// Binary returns the firecracker executable to run.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvBinary, err)
		}
		if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", EnvBinary, p)
		}
		return p, nil
	}
	p, err := exec.LookPath("firecracker")
	if err != nil {
		return "", fmt.Errorf("firecracker not installed (put a release from https://github.com/firecracker-microvm/firecracker/releases on PATH, or set %s)", EnvBinary)
	}
	return p, nil
}

// Available implements backend.Backend: Linux, a firecracker binary of a
// supported version and, for the one on PATH, usable KVM. A binary named
// by MVM_FIRECRACKER_BIN is trusted to know what it needs (the stand-in
// needs no KVM; a real Firecracker fails its start with its own words).
func (*Backend) Available(ctx context.Context) error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("firecracker runs on Linux only")
	}
	bin, err := Binary()
	if err != nil {
		return err
	}
	if os.Getenv(EnvBinary) == "" {
		if ok, why := kvmprobe.Probe(ctx); !ok {
			return fmt.Errorf("firecracker needs KVM: %s", why)
		}
	}
	v, err := binaryVersion(ctx, bin)
	if err != nil {
		return err
	}
	if v.Less(api.MinVersion) {
		return fmt.Errorf("%s is Firecracker %s, too old: mvm needs %s or newer", bin, v, api.MinVersion)
	}
	return nil
}

// binaryVersion runs bin --version ("Firecracker v1.16.1" on its first line).
func binaryVersion(ctx context.Context, bin string) (api.SemVer, error) {
	v, _, err := versionOf(ctx, bin)
	return v, err
}

// versionOf runs bin --version and also says whether it is the stand-in.
func versionOf(ctx context.Context, bin string) (api.SemVer, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return api.SemVer{}, false, fmt.Errorf("%s --version: %w", bin, err)
	}
	v, err := parseVersionOutput(out.String())
	line, _, _ := strings.Cut(out.String(), "\n")
	return v, strings.Contains(line, "(stand-in)"), err
}

func parseVersionOutput(s string) (api.SemVer, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "Firecracker" {
		return api.SemVer{}, fmt.Errorf("not a firecracker --version line: %q", line)
	}
	return api.ParseVersion(f[1])
}

// Open implements backend.Backend.
func (*Backend) Open(dir string) (backend.Handle, error) {
	rec, err := readRecord(dir)
	if err != nil {
		return nil, fmt.Errorf("open firecracker vm %s: %w", dir, err)
	}
	return &Handle{dir: dir, rec: rec}, nil
}

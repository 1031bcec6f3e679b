package security

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
	"github.com/mvm-dev/mvm/internal/dockerapi"
)

// Host is what this host offers new VMs, as the backends themselves see it.
type Host struct {
	// QEMU is nil when QEMU cannot run here; QEMUMissing says why.
	QEMU        *QEMUHost
	QEMUMissing string
	Docker      DockerHost
	// Firecracker is true when this build has a Firecracker backend.
	Firecracker bool
}

// QEMUHost is how QEMU would run a new VM.
type QEMUHost struct {
	Accel       string // "kvm" or "tcg"
	AccelReason string
	// Confine is qemu.ConfinementStatus: the seccomp filter and user a
	// new VM's QEMU gets, with why either is missing.
	Confine qemu.Confinement
}

// DockerHost is the Docker daemon as the docker backend sees it.
type DockerHost struct {
	Available bool
	Reason    string // why not, when not available
	// SecurityOptions is the daemon's /info SecurityOptions, e.g.
	// "name=seccomp,profile=default", "name=userns", "name=rootless".
	SecurityOptions []string `json:",omitempty"`
}

// dockerInfoTimeout bounds the daemon's /info call.
const dockerInfoTimeout = 3 * time.Second

// Probe asks the backends what this host offers. It starts QEMU once (the
// seccomp probe, cached per binary) and pings the Docker daemon.
func Probe(ctx context.Context) Host {
	var h Host
	if err := (&qemu.Backend{}).Available(ctx); err != nil {
		h.QEMUMissing = err.Error()
	} else {
		accel, why := qemu.Accelerator(ctx)
		h.QEMU = &QEMUHost{Accel: accel, AccelReason: why, Confine: qemu.ConfinementStatus(ctx)}
	}
	if err := (&docker.Backend{}).Available(ctx); err != nil {
		h.Docker.Reason = err.Error()
	} else {
		h.Docker.Available = true
		h.Docker.SecurityOptions = dockerSecurityOptions(ctx)
	}
	_, err := backend.Get("firecracker")
	h.Firecracker = err == nil
	return h
}

// dockerSecurityOptions returns the daemon's security options; nil when it
// does not say.
func dockerSecurityOptions(ctx context.Context) []string {
	c, err := dockerapi.New()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, dockerInfoTimeout)
	defer cancel()
	var info struct {
		SecurityOptions []string `json:"SecurityOptions"`
	}
	if err := c.Do(ctx, http.MethodGet, "/info", nil, nil, "", &info); err != nil {
		return nil
	}
	return info.SecurityOptions
}

// statfsType is statfs(2)'s f_type.
func statfsType(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Type), nil
}

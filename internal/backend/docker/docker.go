// Package docker runs an mvm image as a container: the image's root
// filesystem becomes a local Docker image, mvm-agent is the container's PID 1
// (its "container" mode: no modules, no mounts, no power-off), and the host
// reaches the agent through a unix socket in a bind-mounted per-VM directory,
// with the same protocol as every other backend.
//
// Why the Engine API over the unix socket, and neither the moby client module
// nor the docker CLI: the handful of calls we make (ping, image inspect and
// import, container create/start/inspect/pause/unpause/stop/remove) are plain
// HTTP+JSON, so a ~200-line client is enough. The moby module
// (github.com/docker/docker/client) would pull in dozens of packages and
// its own API-version churn for those same calls; the CLI costs a fork/exec
// and ~50-100 ms per call, and State runs on every `mvmctl` read (reconcile),
// so `mvmctl exec` would be slower than `docker exec` itself. The API is
// stable and versioned (we pin v1.40, Docker 19.03+).
package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
)

// Name is the backend's canonical name.
const Name = "docker"

// Backend starts containers.
type Backend struct{}

var _ backend.Backend = (*Backend)(nil)

func init() { backend.Register(&Backend{}) }

// Name implements backend.Backend.
func (*Backend) Name() string { return Name }

// Capabilities implements backend.Backend. A container shares the host
// kernel: there is no machine state to snapshot and no vsock.
func (*Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{Pause: true, Console: true}
}

// pingTimeout bounds the reachability probe; a local daemon answers in ms.
const pingTimeout = 2 * time.Second

// Available implements backend.Backend: the daemon must answer on its socket.
func (*Backend) Available(ctx context.Context) error {
	e, err := newEngine()
	if err != nil {
		return fmt.Errorf("docker backend: %w", err)
	}
	return e.available(ctx)
}

func (e *engine) available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	err := e.ping(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("docker daemon not running: no socket at %s (install Docker and start it, e.g. 'systemctl start docker')", e.sock)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("docker daemon socket %s: permission denied (add your user to the 'docker' group, then log in again)", e.sock)
	default:
		return fmt.Errorf("docker daemon not reachable at %s: %w", e.sock, err)
	}
}

// Open implements backend.Backend.
func (*Backend) Open(dir string) (backend.Handle, error) {
	rec, err := readRecord(dir)
	if err != nil {
		return nil, fmt.Errorf("open docker vm %s: %w", dir, err)
	}
	e, err := newEngine()
	if err != nil {
		return nil, err
	}
	return &Handle{dir: dir, rec: rec, eng: e}, nil
}

package docker

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
)

// Handle operates one container. It holds no live resources: every call
// asks the daemon afresh, so any process can build one from the VM dir.
type Handle struct {
	dir string
	rec record
	eng *engine
}

var (
	_ backend.Handle  = (*Handle)(nil)
	_ backend.Pauser  = (*Handle)(nil)
	_ backend.Remover = (*Handle)(nil)
)

// Dir returns the VM directory.
func (h *Handle) Dir() string { return h.dir }

// Container returns the container's name.
func (h *Handle) Container() string { return h.rec.Container }

// Image returns the Docker image reference the container runs.
func (h *Handle) Image() string { return h.rec.Image }

// State implements backend.Handle. A container that is gone was stopped (it
// is auto-removed when it exits).
func (h *Handle) State(ctx context.Context) (backend.State, error) {
	cs, err := h.eng.inspect(ctx, h.rec.Container)
	if isStatus(err, http.StatusNotFound) {
		return backend.StateStopped, nil
	}
	if err != nil {
		return backend.StateFailed, err
	}
	return mapState(cs), nil
}

// mapState turns Docker's view into ours.
func mapState(cs *containerState) backend.State {
	s := cs.State
	switch s.Status {
	case "running":
		if s.Paused {
			return backend.StatePaused
		}
		return backend.StateRunning
	case "paused":
		return backend.StatePaused
	case "created":
		return backend.StateCreating
	case "restarting":
		return backend.StateStarting
	case "removing":
		return backend.StateStopping
	case "exited":
		if s.OOMKilled || s.Error != "" {
			return backend.StateFailed
		}
		return backend.StateStopped
	default: // "dead" and anything newer
		return backend.StateFailed
	}
}

// Stop implements backend.Handle. The caller asks the agent to shut down
// first, which ends the container by itself; Docker then sends SIGTERM (the
// agent stops its processes and exits) and SIGKILL after timeout.
func (h *Handle) Stop(ctx context.Context, timeout time.Duration) error {
	secs := int(math.Ceil(timeout.Seconds()))
	err := h.eng.post(ctx, h.rec.Container, "stop", url.Values{"t": {strconv.Itoa(secs)}})
	switch {
	case err == nil, isStatus(err, http.StatusNotModified), isStatus(err, http.StatusNotFound):
	default:
		return fmt.Errorf("stop container %s: %w", h.rec.Container, err)
	}
	return h.waitGone(ctx, 10*time.Second)
}

// Kill implements backend.Handle: the container is killed and removed.
func (h *Handle) Kill(ctx context.Context) error { return h.Remove(ctx) }

// Remove implements backend.Remover: no container is left, whatever its
// state. Removing one that is already gone is not an error.
func (h *Handle) Remove(ctx context.Context) error {
	err := h.eng.remove(ctx, h.rec.Container)
	switch {
	case err == nil, isStatus(err, http.StatusNotFound):
		return nil
	case isStatus(err, http.StatusConflict): // auto-removal in progress
		return h.waitGone(ctx, 10*time.Second)
	default:
		return fmt.Errorf("remove container %s: %w", h.rec.Container, err)
	}
}

// waitGone polls until the container no longer exists or no longer runs
// (auto-removal follows shortly), or d passes.
func (h *Handle) waitGone(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		cs, err := h.eng.inspect(ctx, h.rec.Container)
		if isStatus(err, http.StatusNotFound) {
			return nil
		}
		if err == nil && !cs.State.Running && cs.State.Status != "removing" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s still exists after %s", h.rec.Container, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pause implements backend.Pauser (cgroup freezer).
func (h *Handle) Pause(ctx context.Context) error {
	if err := h.eng.post(ctx, h.rec.Container, "pause", nil); err != nil {
		return fmt.Errorf("pause container %s: %w", h.rec.Container, err)
	}
	return nil
}

// Resume implements backend.Pauser.
func (h *Handle) Resume(ctx context.Context) error {
	if err := h.eng.post(ctx, h.rec.Container, "unpause", nil); err != nil {
		return fmt.Errorf("resume container %s: %w", h.rec.Container, err)
	}
	return nil
}

// PID returns the host pid of the container's PID 1 (the agent), or 0.
func (h *Handle) PID() int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cs, err := h.eng.inspect(ctx, h.rec.Container)
	if err != nil {
		return 0
	}
	return cs.State.Pid
}

// SocketPath is the agent's socket on the host.
func (h *Handle) SocketPath() string { return filepath.Join(h.dir, runDir, agentSock) }

// DialAgent implements backend.Handle.
func (h *Handle) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.SocketPath())
	if err != nil {
		return nil, fmt.Errorf("dial agent socket %s: %w", h.SocketPath(), err)
	}
	return c, nil
}

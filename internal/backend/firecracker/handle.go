package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/firecracker/api"
	"github.com/mvm-dev/mvm/internal/supervisor"
	"github.com/mvm-dev/mvm/internal/transport/hybridvsock"
)

// Handle operates one Firecracker VM. It holds no live resources: every
// call reads the VM directory and talks to the API afresh.
type Handle struct {
	dir string
	rec record
}

var (
	_ backend.Handle = (*Handle)(nil)
	_ backend.Pauser = (*Handle)(nil)
)

func (h *Handle) client() *api.Client { return api.New(h.rec.sock(h.dir, apiSock)) }

// Dir returns the VM directory.
func (h *Handle) Dir() string { return h.dir }

// Disks returns the drives the VM was started with (its own root copy
// first), so a later cold boot reuses them.
func (h *Handle) Disks() []backend.Disk { return append([]backend.Disk(nil), h.rec.Disks...) }

// PID returns the firecracker process id, or 0.
func (h *Handle) PID() int {
	p, err := supervisor.ReadPids(h.dir)
	if err != nil {
		return 0
	}
	return p.VMM.Pid
}

// State implements backend.Handle: the process table says whether
// Firecracker runs, GET / what the VM is doing.
func (h *Handle) State(ctx context.Context) (backend.State, error) {
	p, err := supervisor.ReadPids(h.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return backend.StateStopped, nil
		}
		return backend.StateFailed, err
	}
	if !p.VMM.Alive() {
		if p.VMM.Pid == 0 && p.Supervisor.Alive() {
			return backend.StateStarting, nil
		}
		if ex, err := supervisor.ReadExit(h.dir); err == nil && ex.Error != "" {
			return backend.StateFailed, nil
		}
		return backend.StateStopped, nil
	}
	info, err := h.client().Instance(ctx)
	if err != nil {
		return backend.StateFailed, fmt.Errorf("firecracker pid %d runs but its API fails: %w", p.VMM.Pid, err)
	}
	switch info.State {
	case api.StateRunning:
		return backend.StateRunning, nil
	case api.StatePaused:
		return backend.StatePaused, nil
	case api.StateNotStarted:
		return backend.StateStarting, nil
	}
	return backend.StateFailed, fmt.Errorf("firecracker reports unknown state %q", info.State)
}

// Stop implements backend.Handle. The caller asks the agent to shut the
// guest down first; its reboot ends Firecracker (reboot=k). After timeout
// we send Ctrl+Alt+Del (x86), which does the same for a guest that still
// listens, and then kill.
func (h *Handle) Stop(ctx context.Context, timeout time.Duration) error {
	p, err := supervisor.ReadPids(h.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("stop: %w", err)
	}
	if waitGone(ctx, p, timeout) {
		return nil
	}
	if p.VMM.Alive() {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := h.client().SendCtrlAltDel(actx)
		cancel()
		if err == nil && waitGone(ctx, p, 3*time.Second) {
			return nil
		}
	}
	return h.force(ctx, p)
}

// Kill implements backend.Handle.
func (h *Handle) Kill(ctx context.Context) error {
	p, err := supervisor.ReadPids(h.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("kill: %w", err)
	}
	return h.force(ctx, p)
}

// force ends Firecracker with SIGTERM (it does not catch it: an immediate
// stop), then SIGKILL, signalling only the recorded process, and waits for
// the supervisor to record the exit.
func (h *Handle) force(ctx context.Context, p supervisor.Pids) error {
	if p.VMM.Alive() {
		p.VMM.Signal(syscall.SIGTERM)
		if !waitGone(ctx, supervisor.Pids{VMM: p.VMM}, 5*time.Second) {
			if err := p.VMM.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return fmt.Errorf("kill firecracker pid %d: %w", p.VMM.Pid, err)
			}
		}
	} else if p.VMM.Pid == 0 && p.Supervisor.Alive() {
		p.Supervisor.Signal(syscall.SIGTERM)
	}
	if !waitGone(ctx, p, 5*time.Second) {
		if p.VMM.Alive() {
			return fmt.Errorf("firecracker pid %d survived SIGKILL", p.VMM.Pid)
		}
		p.Supervisor.Signal(syscall.SIGKILL)
	}
	return nil
}

func waitGone(ctx context.Context, p supervisor.Pids, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if !p.VMM.Alive() && !p.Supervisor.Alive() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

// Pause implements backend.Pauser.
func (h *Handle) Pause(ctx context.Context) error { return h.client().Pause(ctx) }

// Resume implements backend.Pauser.
func (h *Handle) Resume(ctx context.Context) error { return h.client().Resume(ctx) }

// DialAgent implements backend.Handle: a fresh hybrid vsock connection to
// the agent's port, retried while the guest's listener is not up (boot,
// or the transport reset that follows a restore) until ctx ends.
func (h *Handle) DialAgent(ctx context.Context) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c, err := hybridvsock.Dial(ctx, h.rec.sock(h.dir, vsockSock), h.rec.AgentPort, hybridvsock.Options{})
	if err != nil {
		return nil, fmt.Errorf("dial agent: %w", err)
	}
	return c, nil
}

// Facts describes the VM for inspect.
func (h *Handle) Facts() map[string]any {
	f := map[string]any{
		"dir": h.dir, "transport": "hybrid-vsock", "binary": h.rec.Binary, "version": h.rec.Version,
		"sockets": map[string]string{"api": h.rec.sock(h.dir, apiSock), "vsock": h.rec.sock(h.dir, vsockSock)},
		"jail":    h.rec.Jail, "unjailed": h.rec.Unjailed,
		"logs": map[string]string{"firecracker": h.path(fcLog)},
		"argv": h.rec.Argv,
	}
	if p, err := supervisor.ReadPids(h.dir); err == nil {
		f["pids"] = map[string]any{"supervisor": p.Supervisor.Pid, "supervisor_alive": p.Supervisor.Alive(), "vmm": p.VMM.Pid, "vmm_alive": p.VMM.Alive()}
	}
	if ex, err := supervisor.ReadExit(h.dir); err == nil {
		f["last_exit"] = ex
	}
	return f
}

// logTail returns the end of firecracker.log for error messages.
func (h *Handle) logTail() string {
	b, err := os.ReadFile(h.path(fcLog))
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return "firecracker.log is empty"
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "firecracker.log: " + strings.Join(lines, " | ")
}

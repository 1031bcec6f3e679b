package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/qmp"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// Handle operates one QEMU VM. It holds no live resources: every call reads
// the VM directory and talks to QMP afresh, so any process can build one.
type Handle struct {
	dir string
	rec record
}

var (
	_ backend.Handle = (*Handle)(nil)
	_ backend.Pauser = (*Handle)(nil)
)

// Dir returns the VM directory.
func (h *Handle) Dir() string { return h.dir }

// Transport returns the agent transport the VM was started with.
func (h *Handle) Transport() string { return h.rec.Transport }

// State implements backend.Handle. The process table is the truth about
// whether QEMU runs; QMP says what it is doing.
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
	st, err := h.status(ctx)
	if err != nil {
		return backend.StateFailed, fmt.Errorf("qemu pid %d runs but QMP fails: %w", p.VMM.Pid, err)
	}
	return runState(st.Status), nil
}

func runState(s string) backend.State {
	switch s {
	case "running":
		return backend.StateRunning
	case "paused", "suspended", "postmigrate", "save-vm", "finish-migrate":
		return backend.StatePaused
	case "prelaunch", "inmigrate", "restore-vm":
		return backend.StateStarting
	case "shutdown":
		return backend.StateStopping
	default: // internal-error, io-error, guest-panicked, watchdog, debug...
		return backend.StateFailed
	}
}

// Stop implements backend.Handle. The caller asks the guest agent to shut
// down first (microvm has no ACPI power button the guest would honour); the
// guest's reboot makes QEMU exit (-no-reboot). Stop waits for that, then
// asks QEMU to quit, then kills it.
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
	return h.force(ctx, p, 5*time.Second)
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
	return h.force(ctx, p, time.Second)
}

// force sends QMP quit, waits up to grace, then SIGKILLs QEMU (only if the
// pid still has the recorded start time), and waits for the supervisor to
// record the exit.
func (h *Handle) force(ctx context.Context, p supervisor.Pids, grace time.Duration) error {
	if p.VMM.Alive() {
		qctx, cancel := context.WithTimeout(ctx, grace)
		if c, err := qmp.Dial(qctx, filepath.Join(h.dir, qmpSock)); err == nil {
			c.Quit(qctx) // the reply may be lost as QEMU exits
			c.Close()
		}
		cancel()
		if !waitGone(ctx, supervisor.Pids{VMM: p.VMM}, grace) {
			if err := p.VMM.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return fmt.Errorf("kill qemu pid %d: %w", p.VMM.Pid, err)
			}
		}
	} else if p.VMM.Pid == 0 && p.Supervisor.Alive() {
		// Still launching: the supervisor turns SIGTERM into quit/kill.
		p.Supervisor.Signal(syscall.SIGTERM)
	}
	if !waitGone(ctx, p, 5*time.Second) {
		if p.VMM.Alive() {
			return fmt.Errorf("qemu pid %d survived SIGKILL", p.VMM.Pid)
		}
		// QEMU is gone; a wedged supervisor holds nothing worth keeping.
		p.Supervisor.Signal(syscall.SIGKILL)
	}
	return nil
}

// waitGone polls until both recorded processes are gone or d passes.
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
func (h *Handle) Pause(ctx context.Context) error { return h.qmpDo(ctx, (*qmp.Client).Stop) }

// Resume implements backend.Pauser.
func (h *Handle) Resume(ctx context.Context) error { return h.qmpDo(ctx, (*qmp.Client).Cont) }

func (h *Handle) qmpDo(ctx context.Context, f func(*qmp.Client, context.Context) error) error {
	c, err := qmp.Dial(ctx, filepath.Join(h.dir, qmpSock))
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c, ctx)
}

// DialAgent implements backend.Handle.
func (h *Handle) DialAgent(ctx context.Context) (net.Conn, error) {
	switch h.rec.Transport {
	case guestcfg.TransportVsock:
		return dialVsock(ctx, h.rec.CID, guestcfg.DefaultVsockPort)
	case guestcfg.TransportSerial:
		var d net.Dialer
		path := filepath.Join(h.dir, supervisor.AgentSock)
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, fmt.Errorf("dial agent relay %s: %w", path, err)
		}
		if h.rec.RelayReady {
			if err := supervisor.AwaitReady(ctx, c); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	return nil, fmt.Errorf("unknown agent transport %q", h.rec.Transport)
}

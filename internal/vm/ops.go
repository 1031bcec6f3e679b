package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/store"
)

// running returns the handle of a VM that must be running for a verb.
func (m *Manager) running(ctx context.Context, name, verb string) (*store.Record, backend.Handle, error) {
	rec, err := m.Get(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if rec.State != string(backend.StateRunning) {
		hint := fmt.Sprintf("see 'mvmctl logs %s'", name)
		if rec.State == string(backend.StateStopped) || rec.State == string(backend.StateFailed) {
			hint = fmt.Sprintf("recreate it with 'mvmctl rm %s && mvmctl up --name %s'", name, name)
		}
		reason := ""
		if rec.Reason != "" {
			reason = " (" + rec.Reason + ")"
		}
		return nil, nil, fmt.Errorf("cannot %s: VM %q is %s%s; %s", verb, name, rec.State, reason, hint)
	}
	h, err := m.handle(rec)
	if err != nil {
		return nil, nil, err
	}
	return rec, h, nil
}

// Exec runs a command in a running VM and streams its output.
func (m *Manager) Exec(ctx context.Context, name string, req proto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (proto.Exit, error) {
	_, h, err := m.running(ctx, name, "exec")
	if err != nil {
		return proto.Exit{}, err
	}
	return agentClient(h).Exec(ctx, req, stdin, stdout, stderr)
}

// Down stops a VM: the guest is asked to shut down through its agent, and the
// VMM is forced after timeout. Stopping a stopped VM is not an error.
func (m *Manager) Down(ctx context.Context, name string, timeout time.Duration, force bool) (*store.Record, error) {
	if timeout == 0 {
		timeout = time.Duration(m.Config.StopTimeout)
	}
	if timeout == 0 {
		timeout = config.BuiltinStopTimeout
	}
	rec, err := m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !active(rec.State) {
		return rec, nil
	}
	h, err := m.handle(rec)
	if err != nil {
		return nil, err
	}
	rec.State = string(backend.StateStopping)
	_ = m.Store.Put(rec)
	if force {
		err = h.Kill(ctx)
	} else {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if serr := agentClient(h).Shutdown(actx, false); serr != nil {
			m.Log.Debug("agent shutdown failed; forcing after timeout", "vm", name, "err", serr)
		}
		cancel()
		err = h.Stop(ctx, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("stop %s: %w", name, err)
	}
	rec.State, rec.Reason = string(backend.StateStopped), "stopped by user"
	if err := m.Store.Put(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// ErrRunning is returned by Remove for a running VM without force.
var ErrRunning = errors.New("VM is running")

// Remove deletes a VM and everything it owns. A running VM needs force.
func (m *Manager) Remove(ctx context.Context, name string, force bool) error {
	rec, err := m.Get(ctx, name)
	if err != nil {
		return err
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	if active(rec.State) {
		if !force {
			return fmt.Errorf("%w: %q (stop it first with 'mvmctl down %s', or use 'mvmctl rm -f %s')", ErrRunning, name, name, name)
		}
		if h, err := m.handle(rec); err == nil {
			if err := h.Kill(ctx); err != nil {
				return fmt.Errorf("kill %s: %w", name, err)
			}
		}
	}
	return m.Store.Remove(name)
}

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
		switch backend.State(rec.State) {
		case backend.StateStopped, backend.StateFailed:
			hint = fmt.Sprintf("boot it again with 'mvmctl start %s'", name)
		case backend.StatePaused:
			hint = fmt.Sprintf("continue it with 'mvmctl resume %s'", name)
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
	return m.agentClient(h, name).Exec(ctx, req, stdin, stdout, stderr)
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
	if rec.State == string(backend.StatePaused) && !force {
		// A frozen guest cannot hear the shutdown request.
		if pr, ok := h.(backend.Pauser); ok {
			_ = pr.Resume(ctx)
		}
	}
	rec.State = string(backend.StateStopping)
	_ = m.Store.Put(rec)
	if force {
		err = h.Kill(ctx)
	} else {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if serr := m.agentClient(h, name).Shutdown(actx, false); serr != nil {
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
	if active(rec.State) && !force {
		return fmt.Errorf("%w: %q (stop it first with 'mvmctl down %s', or use 'mvmctl rm -f %s')", ErrRunning, name, name, name)
	}
	// Kill whatever still runs, whatever the record says: a record that
	// lags behind (a crash mid-start) must not leave an orphaned VMM.
	names := []string{rec.Backend}
	if rec.Backend == "" { // corrupt or incomplete record: try them all
		names = backend.Names()
	}
	for _, bn := range names {
		b, err := backend.Get(bn)
		if err != nil {
			continue
		}
		if h, err := b.Open(rec.Dir); err == nil {
			if err := h.Kill(ctx); err != nil {
				return fmt.Errorf("kill %s: %w", name, err)
			}
			// Backends that own resources outside the VM dir (containers)
			// remove them too, whatever the state.
			if r, ok := h.(backend.Remover); ok {
				if err := r.Remove(ctx); err != nil {
					return fmt.Errorf("remove %s: %w", name, err)
				}
			}
		}
	}
	// The network place goes before the record: a crash in between leaves
	// a record that rm cleans again, never an address no record owns.
	if err := m.detachNet(ctx, rec); err != nil {
		return fmt.Errorf("remove %s: release its network address: %w", name, err)
	}
	return m.Store.Remove(name)
}

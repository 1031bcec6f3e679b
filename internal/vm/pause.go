package vm

import (
	"context"
	"fmt"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// Pause freezes a running VM's vCPUs; its memory stays allocated.
func (m *Manager) Pause(ctx context.Context, name string) (*store.Record, error) {
	return m.pauseResume(ctx, name, true)
}

// Resume continues a paused VM.
func (m *Manager) Resume(ctx context.Context, name string) (*store.Record, error) {
	return m.pauseResume(ctx, name, false)
}

func (m *Manager) pauseResume(ctx context.Context, name string, pause bool) (*store.Record, error) {
	verb, from, to := "resume", backend.StatePaused, backend.StateRunning
	if pause {
		verb, from, to = "pause", backend.StateRunning, backend.StatePaused
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
	if rec.State == string(to) {
		return rec, nil
	}
	if rec.State != string(from) {
		return nil, fmt.Errorf("cannot %s: VM %q is %s", verb, name, rec.State)
	}
	be, err := backend.Get(rec.Backend)
	if err != nil {
		return nil, err
	}
	h, err := m.handle(rec)
	if err != nil {
		return nil, err
	}
	pr, ok := h.(backend.Pauser)
	if !ok || !be.Capabilities().Pause {
		return nil, backend.Unsupported(rec.Backend, "pause/resume")
	}
	if pause {
		err = pr.Pause(ctx)
	} else {
		err = pr.Resume(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", verb, name, err)
	}
	rec.State, rec.Reason = string(to), ""
	return rec, m.Store.Put(rec)
}

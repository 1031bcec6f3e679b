package vm

import (
	"context"
	"time"

	"github.com/gofrs/flock"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// Get returns one VM's record, reconciled with reality.
func (m *Manager) Get(ctx context.Context, name string) (*store.Record, error) {
	rec, err := m.Store.Get(name)
	if err != nil {
		return nil, err
	}
	m.reconcile(ctx, rec)
	return rec, nil
}

// List returns every VM's record, reconciled with reality.
func (m *Manager) List(ctx context.Context) ([]*store.Record, error) {
	recs, err := m.Store.List()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		m.reconcile(ctx, r)
	}
	return recs, nil
}

// active states are those in which a VMM process should exist.
func active(s string) bool {
	switch backend.State(s) {
	case backend.StateStarting, backend.StateRunning, backend.StatePaused, backend.StateStopping:
		return true
	}
	return false
}

// reconcile replaces the recorded state with what the VMM says. When the
// record is wrong and nobody holds the VM's lock, the fix is persisted, so a
// crash anywhere leaves a state that the next read reports honestly.
func (m *Manager) reconcile(ctx context.Context, rec *store.Record) {
	if rec.Backend == "" {
		return
	}
	locked := flock.New(m.Store.LockPath(rec.Name))
	got, err := locked.TryLock()
	if err != nil || !got {
		// Someone (an `up` or `down` in progress) owns the VM: trust the record.
		return
	}
	defer locked.Unlock()

	h, err := m.handle(rec)
	var st backend.State
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err = h.State(sctx)
		cancel()
	}
	if err != nil {
		if active(rec.State) {
			rec.State, rec.Reason = string(backend.StateFailed), "cannot query VMM: "+err.Error()
		}
		return
	}
	old := rec.State
	switch {
	case st == backend.StateStopped && backend.State(rec.State) == backend.StateCreating:
		rec.State, rec.Reason = string(backend.StateFailed), "interrupted while creating"
	case st == backend.StateStopped && backend.State(rec.State) == backend.StateStarting:
		rec.State, rec.Reason = string(backend.StateFailed), "VMM exited before the guest was ready"
	case st == backend.StateStopped && active(rec.State):
		rec.State, rec.Reason = string(backend.StateStopped), "VMM exited"
	case (st == backend.StateRunning || st == backend.StatePaused) && rec.State != string(st):
		rec.State, rec.Reason = string(st), ""
	}
	if rec.State != old {
		_ = m.Store.Put(rec)
	}
}

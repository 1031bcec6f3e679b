package vm

import (
	"context"
	"strings"
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

// vmmAliveNote marks a failed VM whose VMM still runs.
const vmmAliveNote = "(VMM still running: 'mvmctl rm -f' or 'mvmctl restart')"

// reconcile replaces the recorded state with what the VMM says. When the
// record is wrong and nobody holds the VM's lock, the fix is persisted, so a
// crash anywhere leaves a state that the next read reports honestly.
func (m *Manager) reconcile(ctx context.Context, rec *store.Record) {
	if rec.Backend == "" {
		return
	}
	// A VM at rest whose backend left nothing to open has nothing to
	// reconcile; skipping the lock keeps `ls` cheap with many records.
	h, err := m.handle(rec)
	if err != nil && !active(rec.State) {
		return
	}
	locked := flock.New(m.Store.LockPath(rec.Name))
	got, lerr := locked.TryLock()
	if lerr != nil || !got {
		// Someone (an `up` or `down` in progress) owns the VM: trust the record.
		return
	}
	defer locked.Unlock()

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
	case st == backend.StateRunning || st == backend.StatePaused:
		switch backend.State(rec.State) {
		case backend.StateRunning, backend.StatePaused, backend.StateStopping, backend.StateStopped:
			// Paused or resumed behind our back, or a stop that never
			// finished: the VMM is the truth.
			if rec.State != string(st) {
				rec.State, rec.Reason = string(st), ""
			}
		case backend.StateFailed:
			// The guest never became ready (or the record is damaged) but
			// the VMM lives on: say so instead of calling it running.
			if !strings.Contains(rec.Reason, vmmAliveNote) {
				rec.Reason = strings.TrimSpace(rec.Reason + " " + vmmAliveNote)
				old = "" // persist the note
			}
		}
		// starting stays starting: readiness is only confirmed by the agent.
	}
	changed := rec.State != old
	if active(rec.State) && rec.PID == 0 {
		// A CLI killed before it recorded the VMM pid.
		if pr, ok := h.(interface{ PID() int }); ok {
			if rec.PID = pr.PID(); rec.PID != 0 {
				changed = true
			}
		}
	}
	if changed {
		_ = m.Store.Put(rec)
	}
}

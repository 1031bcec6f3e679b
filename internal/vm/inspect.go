package vm

import (
	"context"
	"runtime"

	"github.com/mvm-dev/mvm/internal/store"
)

// Inspection is everything known about one VM, for `mvmctl inspect`.
type Inspection struct {
	// Record is the persisted record after reconciliation.
	Record *store.Record `json:"record"`
	// State is the reconciled state (same as Record.State, for scripts).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Arch is the guest's GOARCH (the host's for records without one).
	Arch string `json:"arch"`
	// Sources says which precedence level won for each resource.
	Sources map[string]string `json:"sources"`
	// Backend holds what the backend reports: processes, sockets, disks,
	// transport. Empty when the backend has nothing to say.
	Backend map[string]any `json:"backend,omitempty"`
	// BackendError explains why Backend is empty, if it is.
	BackendError string `json:"backend_error,omitempty"`
	SerialLog    string `json:"serial_log"`
}

// facter is implemented by handles that can describe themselves.
type facter interface {
	Facts() map[string]any
}

// Inspect returns a VM's record, reconciled state and backend facts.
func (m *Manager) Inspect(ctx context.Context, name string) (*Inspection, error) {
	rec, err := m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	in := &Inspection{Record: rec, State: rec.State, Reason: rec.Reason, Sources: rec.Sources, SerialLog: m.SerialLog(name)}
	if in.Arch = rec.Arch; in.Arch == "" {
		in.Arch = runtime.GOARCH
	}
	if in.Sources == nil {
		in.Sources = map[string]string{}
	}
	h, err := m.handle(rec)
	if err != nil {
		in.BackendError = err.Error()
		return in, nil
	}
	if f, ok := h.(facter); ok {
		in.Backend = f.Facts()
	}
	return in, nil
}

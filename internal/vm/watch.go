package vm

import (
	"context"
	"sort"
	"time"
)

// StateChange is one transition seen by Watch.
type StateChange struct {
	Time   time.Time `json:"time"`
	VM     string    `json:"vm"`
	From   string    `json:"from,omitempty"` // empty: the VM appeared
	To     string    `json:"to,omitempty"`   // empty: the VM was removed
	Reason string    `json:"reason,omitempty"`
}

// Kind names the transition for people: created, removed or the new state.
func (c StateChange) Kind() string {
	switch {
	case c.From == "":
		return "created"
	case c.To == "":
		return "removed"
	}
	return c.To
}

// Watch polls the VM records (reconciled with the VMMs, as ls does) every
// interval and calls fn for each change since the previous poll, in name
// order, until ctx ends or fn fails. With current set, the first poll
// reports every existing VM as appearing in its present state.
func (m *Manager) Watch(ctx context.Context, interval time.Duration, current bool, fn func(StateChange) error) error {
	var last map[string]string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		recs, err := m.List(ctx)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		seen := make(map[string]string, len(recs))
		reasons := map[string]string{}
		for _, r := range recs {
			seen[r.Name], reasons[r.Name] = r.State, r.Reason
		}
		if last != nil || current {
			for _, c := range transitions(last, seen, reasons, now) {
				if err := fn(c); err != nil {
					return err
				}
			}
		}
		last = seen
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// transitions lists what differs between two polls, by VM name.
func transitions(before, after, reasons map[string]string, now time.Time) []StateChange {
	var out []StateChange
	for name, st := range after {
		if prev, ok := before[name]; !ok || prev != st {
			out = append(out, StateChange{Time: now, VM: name, From: prev, To: st, Reason: reasons[name]})
		}
	}
	for name, st := range before {
		if _, ok := after[name]; !ok {
			out = append(out, StateChange{Time: now, VM: name, From: st})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

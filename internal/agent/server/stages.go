package server

import (
	"sync"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Stages tracks named readiness steps. The init marks them as boot proceeds;
// the health operation reports a snapshot. Safe for concurrent use; a nil
// *Stages has no stages and is ready.
type Stages struct {
	mu   sync.Mutex
	list []proto.Stage
}

// NewStages declares the stages, in order, all pending.
func NewStages(names ...string) *Stages {
	s := &Stages{}
	for _, n := range names {
		s.list = append(s.list, proto.Stage{Name: n})
	}
	return s
}

// Mark records that a stage is done. Unknown names are appended.
func (s *Stages) Mark(name, detail string) { s.set(name, true, detail) }

// Fail records that a stage did not complete, with the reason.
func (s *Stages) Fail(name, detail string) { s.set(name, false, detail) }

func (s *Stages) set(name string, done bool, detail string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.list {
		if s.list[i].Name == name {
			s.list[i].Done, s.list[i].Detail = done, detail
			return
		}
	}
	s.list = append(s.list, proto.Stage{Name: name, Done: done, Detail: detail})
}

// Snapshot returns a copy of the stages in declaration order.
func (s *Stages) Snapshot() []proto.Stage {
	if s == nil {
		return []proto.Stage{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proto.Stage{}, s.list...)
}

// Ready reports whether every stage is done.
func (s *Stages) Ready() bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.list {
		if !st.Done {
			return false
		}
	}
	return true
}

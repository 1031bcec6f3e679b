package vm

import "time"

// Event is one step of long work, for progress output and `up --json`.
type Event struct {
	Time    time.Time `json:"time"`
	VM      string    `json:"vm,omitempty"`
	Stage   string    `json:"stage"`
	Message string    `json:"message,omitempty"`
	Elapsed float64   `json:"elapsed_s"`
}

// Progress receives events; nil discards them.
type Progress func(Event)

type progress struct {
	fn    Progress
	vm    string
	start time.Time
}

func (p *progress) emit(stage, msg string) {
	if p.fn == nil {
		return
	}
	now := time.Now()
	p.fn(Event{Time: now, VM: p.vm, Stage: stage, Message: msg, Elapsed: now.Sub(p.start).Seconds()})
}

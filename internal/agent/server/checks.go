package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// checkOutputTail is how much of a failing check's output its detail keeps.
const checkOutputTail = 200

// checkState holds the image's health checks and the latest result of each.
type checkState struct {
	statusList[proto.CheckResult]
	specs []CheckSpec // set once by RunChecks, before any check runs
}

// RunChecks runs the image's health checks until ctx ends: each on its own
// interval, a failing one again soon (every 250ms) until it first passes, so
// readiness does not wait a whole interval for a service that is just
// starting. The health-checks stage is done while every latest run passed.
func (s *Server) RunChecks(ctx context.Context, specs []CheckSpec) {
	results := make([]proto.CheckResult, len(specs))
	for i, c := range specs {
		results[i] = proto.CheckResult{Name: c.Name, Detail: "not run yet"}
	}
	s.checks.mu.Lock()
	s.checks.specs = specs
	s.checks.items = results
	s.checks.mu.Unlock()
	s.markChecks()
	for i, spec := range specs {
		go func() {
			passedOnce := false
			for {
				r := s.runCheck(ctx, spec)
				if ctx.Err() != nil {
					return
				}
				s.setCheck(i, r)
				passedOnce = passedOnce || r.OK
				wait := spec.interval()
				if !passedOnce {
					wait = min(wait, 250*time.Millisecond)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}()
	}
}

// runChecksNow runs every check once, concurrently, and records the results.
func (s *Server) runChecksNow(ctx context.Context) {
	s.checks.mu.Lock()
	specs := s.checks.specs
	s.checks.mu.Unlock()
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := s.runCheck(ctx, spec); ctx.Err() == nil {
				s.setCheck(i, r)
			}
		}()
	}
	wg.Wait()
}

func (s *Server) setCheck(i int, r proto.CheckResult) {
	s.checks.update(i, func(c *proto.CheckResult) { *c = r })
	s.markChecks()
}

func (s *Server) markChecks() {
	res := s.checks.snapshot()
	var bad []string
	for _, r := range res {
		if !r.OK {
			bad = append(bad, r.Name+": "+r.Detail)
		}
	}
	s.markSummary(proto.StageHealth, len(res), bad, "passing")
}

// markSummary completes stage when none of total items is bad, and fails
// it naming the bad ones otherwise: "2/3 passing; web: exit status 1".
func (s *Server) markSummary(stage string, total int, bad []string, word string) {
	if total == 0 {
		return
	}
	summary := fmt.Sprintf("%d/%d %s", total-len(bad), total, word)
	if len(bad) == 0 {
		s.cfg.Stages.Mark(stage, summary)
		return
	}
	s.cfg.Stages.Fail(stage, summary+"; "+strings.Join(bad, "; "))
}

// runCheck runs one check to completion or its timeout. Output (stdout and
// stderr on one pipe) is read while the check runs, so a chatty check never
// blocks on a full pipe; only its tail is kept.
func (s *Server) runCheck(ctx context.Context, spec CheckSpec) (res proto.CheckResult) {
	res = proto.CheckResult{Name: spec.Name, Ran: true}
	began := time.Now()
	defer func() { res.DurationMS = time.Since(began).Milliseconds() }()
	es, perr := s.prepareExec(&proto.ExecRequest{Argv: spec.Command})
	if perr != nil {
		res.Detail = perr.Message
		return res
	}
	r, w, err := os.Pipe()
	if err != nil {
		res.Detail = err.Error()
		return res
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		res.Detail = err.Error()
		return res
	}
	attr := &os.ProcAttr{Dir: es.dir, Env: es.env, Files: []*os.File{null, w, w},
		Sys: &syscall.SysProcAttr{Setpgid: true, Credential: es.cred}}
	proc, err := s.start(es.path, es.argv, attr)
	null.Close()
	w.Close()
	if err != nil {
		r.Close()
		res.Detail = startError(es, err).Message
		return res
	}
	tail := &tailBuffer{max: checkOutputTail}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			tail.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(spec.timeout())
	defer timer.Stop()
	timedOut := false
	select {
	case <-proc.Done():
	case <-timer.C:
		timedOut = true
		_ = unix.Kill(-proc.Pid, unix.SIGKILL)
		<-proc.Done()
	case <-ctx.Done():
		_ = unix.Kill(-proc.Pid, unix.SIGKILL)
		<-proc.Done()
	}
	select {
	case <-drained:
	case <-time.After(time.Second): // a background child holds the pipe
	}
	r.Close()
	<-drained
	out := strings.TrimSpace(tail.String())
	switch ws := proc.Status(); {
	case timedOut:
		res.Detail = fmt.Sprintf("timed out after %s", spec.timeout())
	case ws.Exited() && ws.ExitStatus() == 0:
		res.OK = true
		res.Detail = out
	case ws.Exited():
		res.Detail = fmt.Sprintf("exit %d", ws.ExitStatus())
	default:
		res.Detail = "killed by " + unix.SignalName(ws.Signal())
	}
	if !res.OK && out != "" {
		res.Detail += ": " + out
	}
	return res
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ToValidUTF8(string(t.b), "?")
}

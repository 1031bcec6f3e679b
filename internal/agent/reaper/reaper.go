// Package reaper starts child processes and collects every exit status from a
// single wait4(-1) loop.
//
// As PID 1 (or a child subreaper) the agent inherits orphans and must reap
// them, but a wait4(-1) loop steals the status that exec.Cmd.Wait is waiting
// for. So all children of the agent are started here instead: the pid is
// registered under the same lock that the reap loop holds while it waits, so a
// child that exits at once is still delivered to its own waiter, and anything
// not registered is an orphan that is reaped and counted.
//
// The agent always uses it, PID 1 or not: one code path, exercised by the unit
// tests, and as a subreaper the agent also cleans up daemons left behind by the
// commands it runs. The rule that follows: while a Reaper runs, nothing else in
// the process may start children with os/exec.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Reaper owns the process's children.
type Reaper struct {
	log     *slog.Logger
	mu      sync.Mutex // held across fork and across each reap pass
	waiters map[int]*Process
	closed  bool
	orphans atomic.Int64
	sigs    chan os.Signal
	stop    chan struct{}
	done    chan struct{}
}

// Process is a child started by a Reaper.
type Process struct {
	Pid    int
	done   chan struct{}
	status unix.WaitStatus
}

// Done is closed once the process has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Status is the wait status; valid only after Done is closed.
func (p *Process) Status() unix.WaitStatus { return p.status }

// Wait blocks until the process is reaped or ctx ends.
func (p *Process) Wait(ctx context.Context) (unix.WaitStatus, error) {
	select {
	case <-p.done:
		return p.status, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// New starts the reap loop and makes the process a child subreaper so that
// orphaned descendants come back to it. Only one Reaper may run per process;
// most callers want Default.
func New(log *slog.Logger) (*Reaper, error) {
	if log == nil {
		log = slog.Default()
	}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("set child subreaper: %w", err)
		}
	}
	r := &Reaper{
		log:     log,
		waiters: map[int]*Process{},
		sigs:    make(chan os.Signal, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	signal.Notify(r.sigs, unix.SIGCHLD)
	go r.loop()
	return r, nil
}

var (
	defaultOnce sync.Once
	defaultR    *Reaper
	defaultErr  error
)

// Default returns the process-wide Reaper, starting it on first use.
func Default() (*Reaper, error) {
	defaultOnce.Do(func() { defaultR, defaultErr = New(nil) })
	return defaultR, defaultErr
}

// Start forks and execs path like os.StartProcess and registers the child.
func (r *Reaper) Start(path string, argv []string, attr *os.ProcAttr) (*Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("reaper closed")
	}
	op, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return nil, err
	}
	p := &Process{Pid: op.Pid, done: make(chan struct{})}
	r.waiters[op.Pid] = p
	// We reap by pid, so the pidfd os.Process holds is not needed. Release
	// closes it without waiting.
	_ = op.Release()
	return p, nil
}

// Orphans counts reaped processes that nobody was waiting for.
func (r *Reaper) Orphans() int64 { return r.orphans.Load() }

// Close stops the loop. Children still running are no longer reaped.
func (r *Reaper) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	signal.Stop(r.sigs)
	close(r.stop)
	<-r.done
}

func (r *Reaper) loop() {
	defer close(r.done)
	r.reapAll() // children may have exited before Notify was set up
	for {
		select {
		case <-r.stop:
			return
		case <-r.sigs:
			// SIGCHLDs coalesce: one wake-up may stand for many exits, so a
			// pass reaps until nothing is left. A signal that arrives during
			// the pass leaves the channel non-empty and causes another pass.
			r.reapAll()
		}
	}
}

func (r *Reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		// No __WALL: Go's own clone(CLONE_PIDFD) probe child uses a non-SIGCHLD
		// exit signal and is waited for by the runtime; it must not be stolen.
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none exited
			return
		}
		if p, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			p.status = ws
			close(p.done)
			continue
		}
		r.orphans.Add(1)
		r.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
	}
}

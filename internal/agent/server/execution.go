package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/reaper"
)

// execution is one running exec: the process, its pipes and the goroutines
// that move bytes between them and the connection.
type execution struct {
	w       *wire
	proc    *reaper.Process
	pgid    int
	stdout  *os.File // read ends
	stderr  *os.File
	stdin   *os.File // write end; nil when stdin was not requested
	tty     *os.File // PTY master (also stdout and stdin); nil for pipes
	timeout time.Duration
	idle    time.Duration // 0: no idle limit
	active  atomic.Int64  // unix nanos of the last input or output
	// onExit, when set, runs once the process is gone (console: free the slot).
	onExit func()

	stdinCh   chan []byte   // input reader → stdin writer (bounded: backpressure)
	stdinDone chan struct{} // stdin writer exited
	finished  chan struct{} // process reaped and output drained
	writeErr  chan error    // an output frame could not be sent
	silenced  atomic.Bool   // the operation ended (TError, peer gone): drop output
	bg        sync.WaitGroup
}

// run streams until the process exits, then sends TExit. The connection
// closing, a protocol violation or ctx ending kills the process group.
func (x *execution) run(ctx context.Context) error {
	defer func() {
		x.closeFiles()
		x.bg.Wait()
	}()
	if err := respond(x.w, execStarted{Pid: x.proc.Pid}); err != nil {
		x.kill()
		<-x.proc.Done()
		return fmt.Errorf("send exec response: %w", err)
	}

	var pumps sync.WaitGroup
	pumps.Add(1)
	go x.pump(&pumps, x.stdout, proto.TStdout)
	if x.stderr != nil {
		pumps.Add(1)
		go x.pump(&pumps, x.stderr, proto.TStderr)
	}
	if x.stdin != nil {
		x.bg.Add(1)
		go x.writeStdin()
	} else {
		close(x.stdinDone)
	}
	inputErr := make(chan error, 1)
	go func() { inputErr <- x.readInput() }()

	var timeoutC <-chan time.Time
	if x.timeout > 0 {
		t := time.NewTimer(x.timeout)
		defer t.Stop()
		timeoutC = t.C
	}
	var idleC <-chan time.Time
	if x.idle > 0 {
		x.touch()
		t := time.NewTicker(min(x.idle/4, time.Second))
		defer t.Stop()
		idleC = t.C
	}
	done := ctx.Done()
	timedOut, peerGone, idled := false, false, false
	var result error
	for waiting := true; waiting; {
		select {
		case <-x.proc.Done():
			waiting = false
		case <-timeoutC:
			timeoutC, timedOut = nil, true
			x.kill()
		case <-idleC:
			if time.Since(time.Unix(0, x.active.Load())) >= x.idle {
				idleC, idled = nil, true
				x.signal(unix.SIGHUP) // what a hung-up terminal does; then make sure
				time.AfterFunc(2*time.Second, x.kill)
			}
		case err := <-inputErr:
			inputErr, peerGone = nil, true
			x.silenced.Store(true)
			x.kill()
			if e, ok := proto.AsError(err); ok {
				_ = x.w.fail(e)
				result = e
			} else {
				result = fmt.Errorf("client went away: %w", err)
			}
		case err := <-x.writeErr:
			if !peerGone {
				peerGone, result = true, fmt.Errorf("send output: %w", err)
			}
			x.silenced.Store(true)
			x.kill()
		case <-done:
			done, peerGone, result = nil, true, ctx.Err()
			x.silenced.Store(true)
			x.kill()
		}
	}

	x.drain(&pumps)
	close(x.finished)
	if x.onExit != nil {
		x.onExit()
	}
	if !peerGone {
		e := exitOf(x.proc.Status(), timedOut)
		e.IdleTimeout = idled
		if err := x.w.sendJSON(proto.TExit, e); err != nil {
			result = fmt.Errorf("send exit: %w", err)
		}
	}
	// A read deadline in the past unblocks the input reader.
	_ = x.w.conn.SetReadDeadline(time.Now())
	if inputErr != nil {
		<-inputErr
	}
	return result
}

func exitOf(ws unix.WaitStatus, timedOut bool) proto.Exit {
	e := proto.Exit{TimedOut: timedOut}
	switch {
	case ws.Exited():
		e.Code = ws.ExitStatus()
	case ws.Signaled():
		e.Code = 128 + int(ws.Signal())
		e.Signal = strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
	}
	return e
}

func (x *execution) touch() { x.active.Store(time.Now().UnixNano()) }

// kill ends the whole process group; a group already gone is fine.
func (x *execution) kill() { x.signal(unix.SIGKILL) }

func (x *execution) signal(sig syscall.Signal) { _ = unix.Kill(-x.pgid, sig) }

// pump forwards one output pipe in chunks of at most MaxData, as it arrives.
func (x *execution) pump(wg *sync.WaitGroup, r *os.File, t proto.Type) {
	defer wg.Done()
	buf := make([]byte, proto.MaxData)
	for {
		n, err := r.Read(buf)
		if n > 0 && x.idle > 0 {
			x.touch()
		}
		if n > 0 && !x.silenced.Load() {
			if werr := x.w.send(t, buf[:n]); werr != nil {
				select {
				case x.writeErr <- werr:
				default:
				}
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drain waits for both outputs to reach EOF, at most drainTimeout.
func (x *execution) drain(pumps *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		pumps.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(drainTimeout):
	}
	// Something that outlived the leader holds the pipes; stop reading.
	x.stdout.Close()
	if x.stderr != nil {
		x.stderr.Close()
	}
	<-done
}

func (x *execution) writeStdin() {
	defer x.bg.Done()
	defer close(x.stdinDone)
	if x.tty == nil { // the PTY master also carries output: closeFiles closes it
		defer x.stdin.Close()
	}
	for {
		select {
		case b, ok := <-x.stdinCh:
			if !ok {
				if x.tty != nil {
					// A terminal has no half-close: end-of-input is ^D.
					_, _ = x.tty.Write([]byte{4})
				}
				return
			}
			// Blocks while the process does not read; closeFiles unblocks it.
			if _, err := x.stdin.Write(b); err != nil {
				return
			}
		case <-x.finished:
			return
		}
	}
}

// readInput handles client frames until the connection fails or misbehaves.
func (x *execution) readInput() error {
	eof := false
	for {
		f, err := proto.ReadFrame(x.w.conn)
		if err != nil {
			if errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrEmptyFrame) ||
				errors.Is(err, proto.ErrUnknownType) {
				return proto.Errorf(proto.CodeBadRequest, "during exec: %v", err)
			}
			return err
		}
		if x.idle > 0 {
			x.touch()
		}
		switch f.Type {
		case proto.TResize:
			if x.tty == nil {
				return proto.Errorf(proto.CodeBadRequest, "resize frame without a tty")
			}
			var r proto.Resize
			if err := f.Decode(&r); err != nil {
				return proto.Errorf(proto.CodeBadRequest, "%v", err)
			}
			if r.Cols == 0 || r.Rows == 0 {
				return proto.Errorf(proto.CodeBadRequest, "resize to %dx%d", r.Cols, r.Rows)
			}
			_ = setSize(x.tty, r) // SIGWINCH reaches the foreground group
		case proto.TStdin:
			if x.stdin == nil || eof {
				return proto.Errorf(proto.CodeBadRequest, "stdin frame after stdin-eof or without stdin requested")
			}
			select {
			case x.stdinCh <- f.Payload:
			case <-x.stdinDone: // process stopped reading stdin; drop
			case <-x.finished:
			}
		case proto.TStdinEOF:
			if x.stdin == nil {
				return proto.Errorf(proto.CodeBadRequest, "stdin-eof without stdin requested")
			}
			if !eof {
				eof = true
				close(x.stdinCh)
			}
		case proto.TSignal:
			var s proto.Signal
			if err := f.Decode(&s); err != nil {
				return proto.Errorf(proto.CodeBadRequest, "%v", err)
			}
			if s.Signal < 1 || s.Signal > 64 {
				return proto.Errorf(proto.CodeBadRequest, "invalid signal %d", s.Signal)
			}
			x.signal(syscall.Signal(s.Signal))
		default:
			return proto.Errorf(proto.CodeBadRequest, "unexpected %s frame during exec", f.Type)
		}
	}
}

func (x *execution) closeFiles() {
	x.stdout.Close()
	if x.stderr != nil {
		x.stderr.Close()
	}
	if x.stdin != nil && x.tty == nil {
		x.stdin.Close()
	}
}

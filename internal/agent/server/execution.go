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
	timeout time.Duration

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
	pumps.Add(2)
	go x.pump(&pumps, x.stdout, proto.TStdout)
	go x.pump(&pumps, x.stderr, proto.TStderr)
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
	done := ctx.Done()
	timedOut, peerGone := false, false
	var result error
	for waiting := true; waiting; {
		select {
		case <-x.proc.Done():
			waiting = false
		case <-timeoutC:
			timeoutC, timedOut = nil, true
			x.kill()
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
	if !peerGone {
		if err := x.w.sendJSON(proto.TExit, exitOf(x.proc.Status(), timedOut)); err != nil {
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

// kill ends the whole process group; a group already gone is fine.
func (x *execution) kill() { x.signal(unix.SIGKILL) }

func (x *execution) signal(sig syscall.Signal) { _ = unix.Kill(-x.pgid, sig) }

// pump forwards one output pipe in chunks of at most MaxData, as it arrives.
func (x *execution) pump(wg *sync.WaitGroup, r *os.File, t proto.Type) {
	defer wg.Done()
	buf := make([]byte, proto.MaxData)
	for {
		n, err := r.Read(buf)
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
	x.stderr.Close()
	<-done
}

func (x *execution) writeStdin() {
	defer x.bg.Done()
	defer close(x.stdinDone)
	defer x.stdin.Close()
	for {
		select {
		case b, ok := <-x.stdinCh:
			if !ok {
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
		switch f.Type {
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
	x.stderr.Close()
	if x.stdin != nil {
		x.stdin.Close()
	}
}

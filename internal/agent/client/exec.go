package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Process is a running exec. Output is copied to the writers given to Start
// as it arrives; Wait returns the exit.
type Process struct {
	// Pid is the guest pid (informational; it leads the process group).
	Pid  int
	cn   *conn
	ctx  context.Context
	done chan struct{}
	exit proto.Exit
	err  error
}

// Exec runs req in the guest and waits for it. stdin, when non-nil, is
// streamed to the process (req.Stdin is set accordingly); nil stdout/stderr
// discard. Cancelling ctx closes the connection, which makes the agent kill
// the process group.
func (c *Client) Exec(ctx context.Context, req proto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (proto.Exit, error) {
	p, err := c.Start(ctx, req, stdin, stdout, stderr)
	if err != nil {
		return proto.Exit{}, err
	}
	return p.Wait()
}

// Start is Exec without the wait; use it to forward signals (Signal,
// ForwardSignals). ctx governs the whole run, not just the start.
func (c *Client) Start(ctx context.Context, req proto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (*Process, error) {
	req.Stdin = stdin != nil || req.TTY
	cn, res, err := c.call(ctx, proto.OpExec, req)
	if err != nil {
		return nil, err
	}
	return c.startProcess(ctx, cn, res, stdin, stdout, stderr), nil
}

func (c *Client) startProcess(ctx context.Context, cn *conn, res json.RawMessage, stdin io.Reader, stdout, stderr io.Writer) *Process {
	var started struct {
		Pid int `json:"pid"`
	}
	_ = json.Unmarshal(res, &started) // informational
	p := &Process{Pid: started.Pid, cn: cn, ctx: ctx, done: make(chan struct{})}
	if stdin != nil {
		go p.pumpStdin(stdin)
	}
	go p.readOutput(orDiscard(stdout), orDiscard(stderr))
	return p
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// Wait returns the exit status, or the error that ended the stream
// (*proto.Error from the agent, ctx's error, or a transport error).
func (p *Process) Wait() (proto.Exit, error) {
	<-p.done
	return p.exit, p.err
}

// Signal delivers sig to the guest process group. It may wait behind stdin
// that the process is not reading (both share the connection).
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return errors.New("process already finished")
	default:
	}
	return p.cn.sendJSON(proto.TSignal, proto.Signal{Signal: int(sig)})
}

// ForwardSignals relays every signal received on ch until the process ends.
// Typical use: signal.Notify(ch, SIGINT, SIGTERM, SIGHUP) in a CLI, before
// Start: the command may have run and printed by the time Start returns, and
// a signal sent on seeing that must already have somewhere to go.
func (p *Process) ForwardSignals(ch <-chan os.Signal) {
	go func() {
		for {
			select {
			case s := <-ch:
				if sig, ok := s.(syscall.Signal); ok {
					_ = p.Signal(sig)
				}
			case <-p.done:
				return
			}
		}
	}()
}

func (p *Process) pumpStdin(r io.Reader) {
	buf := make([]byte, proto.MaxData)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if p.cn.send(proto.TStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			// A local read error ends stdin just like EOF; the process decides.
			_ = p.cn.send(proto.TStdinEOF, nil)
			return
		}
	}
}

func (p *Process) readOutput(stdout, stderr io.Writer) {
	defer close(p.done)
	defer p.cn.close()
	p.exit, p.err = p.stream(stdout, stderr)
	if p.err != nil && p.ctx.Err() != nil {
		p.err = fmt.Errorf("agent exec: %w", p.ctx.Err())
	}
}

func (p *Process) stream(stdout, stderr io.Writer) (proto.Exit, error) {
	for {
		f, err := proto.ReadFrame(p.cn.Conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return proto.Exit{}, fmt.Errorf("agent exec: connection ended before exit: %w", err)
		}
		switch f.Type {
		case proto.TStdout:
			if _, err := stdout.Write(f.Payload); err != nil {
				return proto.Exit{}, fmt.Errorf("write stdout: %w", err)
			}
		case proto.TStderr:
			if _, err := stderr.Write(f.Payload); err != nil {
				return proto.Exit{}, fmt.Errorf("write stderr: %w", err)
			}
		case proto.TExit:
			var e proto.Exit
			if err := json.Unmarshal(f.Payload, &e); err != nil {
				return proto.Exit{}, fmt.Errorf("decode exit: %w", err)
			}
			return e, nil
		case proto.TError:
			return proto.Exit{}, decodeError(f)
		default:
			return proto.Exit{}, fmt.Errorf("agent exec: unexpected %s frame", f.Type)
		}
	}
}

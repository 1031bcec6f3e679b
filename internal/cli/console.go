package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func newConsoleCommand(g *globals) *cobra.Command {
	var command string
	var idle time.Duration
	cmd := &cobra.Command{
		Use:   "console NAME [--command CMD]",
		Short: "Open an interactive shell in a VM",
		Long: `Open an interactive login shell on a terminal in the VM, through its guest
agent. Type ~. at the start of a line to detach. Only one console session
runs per VM; the image must allow it ([access] console = true). The session
ends after console_idle_timeout (config, default 15m) without activity.

With --command, run CMD through /bin/sh -c instead, print its output and exit
with its exit code (no terminal, allowed on every image).`,
		Example: `  mvmctl console web
  mvmctl console web --command "uname -a"`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			if command != "" {
				exit, err := m.Exec(cmd.Context(), args[0], proto.ExecRequest{Argv: []string{"/bin/sh", "-c", command}}, nil, g.stdout, g.stderr)
				if err != nil {
					return err
				}
				if exit.Code != 0 {
					return &ExitError{Code: exit.Code}
				}
				return nil
			}
			if idle == 0 {
				idle = time.Duration(m.Config.ConsoleIdleTimeout)
			}
			// Ctrl-C belongs to the guest shell: only ~. or the shell's
			// exit end the session.
			ctx, cancel := context.WithCancel(context.WithoutCancel(cmd.Context()))
			defer cancel()
			t := openTerminal(g.stdin)
			req := proto.ConsoleRequest{IdleTimeoutMS: idle.Milliseconds(), Term: os.Getenv("TERM")}
			req.Cols, req.Rows = t.size()
			in := &escapeReader{r: g.stdin, atLineStart: true, detach: cancel}
			p, err := m.Console(ctx, args[0], req, in, g.stdout)
			if err != nil {
				return err
			}
			restore := t.makeRaw()
			defer restore()
			t.followResize(ctx, p)
			exit, err := p.Wait()
			restore()
			if in.detached() {
				fmt.Fprintln(g.stderr, "\r\nmvmctl: detached from the console")
				return nil
			}
			if err != nil {
				return err
			}
			if exit.IdleTimeout {
				fmt.Fprintf(g.stderr, "\r\nmvmctl: console closed after %s without activity\n", time.Duration(req.IdleTimeoutMS)*time.Millisecond)
			}
			if exit.Code != 0 {
				return &ExitError{Code: exit.Code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&command, "command", "", "run this shell command and exit with its code")
	cmd.Flags().DurationVar(&idle, "idle-timeout", 0, "end the session after this long without activity (default: config console_idle_timeout, else 15m)")
	return cmd
}

// terminal is the local terminal, when stdin is one.
type terminal struct {
	fd int // -1: not a terminal
}

func openTerminal(stdin io.Reader) terminal {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return terminal{fd: int(f.Fd())}
	}
	return terminal{fd: -1}
}

func (t terminal) isTTY() bool { return t.fd >= 0 }

func (t terminal) size() (cols, rows uint16) {
	if t.fd < 0 {
		return 0, 0
	}
	w, h, err := term.GetSize(t.fd)
	if err != nil || w <= 0 || h <= 0 || w > 0xffff || h > 0xffff {
		return 0, 0
	}
	return uint16(w), uint16(h)
}

// makeRaw puts the terminal in raw mode; the returned func restores it and
// may be called more than once.
func (t terminal) makeRaw() func() {
	if t.fd < 0 {
		return func() {}
	}
	old, err := term.MakeRaw(t.fd)
	if err != nil {
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { _ = term.Restore(t.fd, old) }) }
}

// followResize sends the terminal's size to the guest on every SIGWINCH
// until ctx ends or the process finishes.
func (t terminal) followResize(ctx context.Context, p *client.Process) {
	if t.fd < 0 {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ch:
				if c, r := t.size(); c > 0 {
					if p.Resize(c, r) != nil {
						return
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
}

// escapeReader passes input through, except that "~." at the start of a
// line detaches (ssh's convention). A "~" followed by anything else is sent
// as typed; "~~" sends one "~".
type escapeReader struct {
	r           io.Reader
	atLineStart bool
	pending     bool // saw "~" at line start, waiting for the next byte
	detach      func()
	mu          sync.Mutex
	gone        bool
}

var errDetached = errors.New("detached")

func (e *escapeReader) detached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gone
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) < 2 {
		return 0, io.ErrShortBuffer
	}
	// One byte of room for a held-back "~".
	buf := make([]byte, len(p)-1)
	n, err := e.r.Read(buf)
	out := p[:0]
	for _, b := range buf[:n] {
		if e.pending {
			e.pending = false
			if b == '.' {
				e.mu.Lock()
				e.gone = true
				e.mu.Unlock()
				e.detach()
				return len(out), errDetached
			}
			out = append(out, '~')
			if b == '~' {
				e.atLineStart = false
				continue
			}
		} else if e.atLineStart && b == '~' {
			e.pending = true
			continue
		}
		out = append(out, b)
		e.atLineStart = b == '\r' || b == '\n'
	}
	return len(out), err
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func newExecCommand(g *globals) *cobra.Command {
	var req proto.ExecRequest
	var interactive bool
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command in a running VM",
		Long: `Run a command in a running VM through its guest agent. stdout and stderr
are streamed separately; mvmctl exits with the command's exit code.
Ctrl-C, SIGTERM and SIGHUP are passed on to the command (press Ctrl-C three
times to give up on it). With -t the command runs on a terminal in the guest
(output merged, like a terminal shows it) and the local terminal is raw.`,
		Example: `  mvmctl exec web -- uname -a
  echo hi | mvmctl exec -i web -- cat
  mvmctl exec -it web -- top`,
		ValidArgsFunction: completeVMNames(g),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{errors.New("exec needs a VM name and a command: mvmctl exec NAME -- COMMAND [ARGS...]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			for _, e := range req.Env {
				if !strings.Contains(e, "=") {
					return usageError{fmt.Errorf("--env %q: want KEY=VALUE", e)}
				}
			}
			req.Argv = args[1:]
			var stdin io.Reader
			if interactive || req.TTY {
				req.Stdin = true
				stdin = g.stdin
			}
			t := openTerminal(g.stdin)
			if req.TTY {
				req.Cols, req.Rows = t.size()
				if term := os.Getenv("TERM"); term != "" {
					req.Env = append([]string{"TERM=" + term}, req.Env...)
				}
			}
			agent := func(ctx context.Context) (*client.Client, error) { return m.Agent(ctx, args[0], "exec") }
			return runExec(cmd.Context(), agent, req, t, stdin, g.stdout, g.stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	f.BoolVarP(&req.TTY, "tty", "t", false, "run the command on a terminal (implies -i)")
	f.StringArrayVarP(&req.Env, "env", "e", nil, "set an environment variable (KEY=VALUE, repeatable)")
	f.StringVarP(&req.Cwd, "workdir", "w", "", "working directory in the guest")
	f.StringVarP(&req.User, "user", "u", "", "user to run as (name or uid[:gid])")
	f.Int64Var(&req.TimeoutMS, "timeout-ms", 0, "kill the command after this many milliseconds")
	return cmd
}

// runExec runs req through the agent client that agent returns and maps its
// exit to mvmctl's. parent is the command's context, which main cancels on
// SIGINT or SIGTERM; exec outlives that and relays the signals instead.
func runExec(parent context.Context, agent func(context.Context) (*client.Client, error), req proto.ExecRequest, t terminal, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	// Catch the signals before the exec starts, not once Start returns: by
	// then the command's first output may already be on our stdout, and a
	// caller that signals on seeing it (test/e2e's "SIGTERM reaches the
	// guest process") used to beat signal.Notify. The signal then went only
	// to main's NotifyContext, whose cancel exec ignores: it was lost, and
	// the command ran to its end with status 0.
	relay := relaySignals(cancel)
	defer relay.stop()
	// One that came before relaySignals reached main's NotifyContext only:
	// honour it by not starting the command at all.
	if err := parent.Err(); err != nil {
		return fmt.Errorf("exec not started: %w (%v)", err, context.Cause(parent))
	}
	c, err := agent(ctx)
	if err != nil {
		return err
	}
	p, err := c.Start(ctx, req, stdin, stdout, stderr)
	if err != nil {
		return startFailure(err)
	}
	relay.attach(p)
	if req.TTY && t.isTTY() {
		restore := t.makeRaw()
		defer restore()
		t.followResize(ctx, p)
	}
	exit, err := p.Wait()
	if err != nil {
		return err
	}
	if exit.Code != 0 {
		var msg error
		switch {
		case exit.TimedOut:
			msg = fmt.Errorf("command timed out after %dms and was killed", req.TimeoutMS)
		case exit.Signal != "" && !req.TTY:
			msg = fmt.Errorf("command killed by SIG%s", exit.Signal)
		}
		return &ExitError{Code: exit.Code, Err: msg}
	}
	return nil
}

// relayedSignals are passed on to the guest process group instead of ending
// mvmctl.
var relayedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// signalRelay passes relayedSignals on to the guest process. It catches
// them from before the exec is dialled and holds those that arrive before
// attach hands it the process, so none is lost in between. The third SIGINT
// gives up: cancel closes the connection, which makes the agent kill the
// process group.
type signalRelay struct {
	caught chan os.Signal
	procs  chan *client.Process
	quit   chan struct{}
}

func relaySignals(cancel func()) *signalRelay {
	r := &signalRelay{
		caught: make(chan os.Signal, 8),
		procs:  make(chan *client.Process, 1),
		quit:   make(chan struct{}),
	}
	signal.Notify(r.caught, relayedSignals...)
	go r.loop(cancel)
	return r
}

// attach starts delivery to p, held signals first. Call it at most once.
func (r *signalRelay) attach(p *client.Process) { r.procs <- p }

// stop ends the relay; signals go back to main's handling.
func (r *signalRelay) stop() {
	signal.Stop(r.caught)
	close(r.quit)
}

func (r *signalRelay) loop(cancel func()) {
	defer signal.Stop(r.caught)
	// fwd is drained by the process's forwarder, which may block behind
	// stdin on the connection; the loop keeps a queue rather than wait, so
	// it neither drops a signal nor misses the third Ctrl-C meanwhile.
	fwd := make(chan os.Signal)
	var held []os.Signal
	procs, attached := r.procs, false
	ints := 0
	for {
		var out chan<- os.Signal // nil (no send) until there is a process and a signal
		var next os.Signal
		if attached && len(held) > 0 {
			out, next = fwd, held[0]
		}
		select {
		case s := <-r.caught:
			if s == syscall.SIGINT {
				if ints++; ints >= 3 {
					cancel()
					return
				}
			}
			held = append(held, s)
		case out <- next:
			held = held[1:]
		case p := <-procs:
			procs, attached = nil, true
			p.ForwardSignals(fwd)
		case <-r.quit:
			return
		}
	}
}

// Exit statuses of a command the guest could not start, as the shell and
// docker exec give them: 127 when there is no such program, 126 when it
// cannot be run (not executable, unknown user, bad working directory).
// Failures to reach the VM at all stay 1.
const (
	exitNotFound  = 127
	exitCannotRun = 126
)

func startFailure(err error) error {
	pe, ok := proto.AsError(err)
	if !ok {
		return err
	}
	switch pe.Code {
	case proto.CodeNotFound:
		return &ExitError{Code: exitNotFound, Err: err}
	case proto.CodeDenied, proto.CodeBadRequest:
		return &ExitError{Code: exitCannotRun, Err: err}
	}
	return err
}

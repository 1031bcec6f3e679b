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
			// Signals go to the guest process instead of ending mvmctl; the
			// run's context therefore outlives the first Ctrl-C.
			ctx, cancel := context.WithCancel(context.WithoutCancel(cmd.Context()))
			defer cancel()
			c, err := m.Agent(ctx, args[0], "exec")
			if err != nil {
				return err
			}
			p, err := c.Start(ctx, req, stdin, g.stdout, g.stderr)
			if err != nil {
				return err
			}
			forwardSignals(p, cancel)
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

// forwardSignals relays SIGINT, SIGTERM, SIGHUP and SIGQUIT to the guest
// process group. The third SIGINT gives up: cancel closes the connection,
// which makes the agent kill the process.
func forwardSignals(p *client.Process, cancel func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	fwd := make(chan os.Signal, 4)
	p.ForwardSignals(fwd)
	go func() {
		defer signal.Stop(ch)
		ints := 0
		done := make(chan struct{})
		go func() { _, _ = p.Wait(); close(done) }()
		for {
			select {
			case s := <-ch:
				if s == syscall.SIGINT {
					if ints++; ints >= 3 {
						cancel()
						return
					}
				}
				fwd <- s
			case <-done:
				return
			}
		}
	}()
}

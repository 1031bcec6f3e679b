package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func newExecCommand(g *globals) *cobra.Command {
	var req proto.ExecRequest
	var interactive bool
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command in a running VM",
		Long: `Run a command in a running VM through its guest agent. stdout and stderr
are streamed separately; mvmctl exits with the command's exit code.`,
		Example: `  mvmctl exec web -- uname -a
  echo hi | mvmctl exec -i web -- cat`,
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
			if interactive {
				req.Stdin = true
				stdin = g.stdin
			}
			exit, err := m.Exec(cmd.Context(), args[0], req, stdin, g.stdout, g.stderr)
			if err != nil {
				return err
			}
			if exit.Code != 0 {
				var msg error
				if exit.TimedOut {
					msg = fmt.Errorf("command timed out after %dms and was killed", req.TimeoutMS)
				}
				return &ExitError{Code: exit.Code, Err: msg}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	f.StringArrayVarP(&req.Env, "env", "e", nil, "set an environment variable (KEY=VALUE, repeatable)")
	f.StringVarP(&req.Cwd, "workdir", "w", "", "working directory in the guest")
	f.StringVarP(&req.User, "user", "u", "", "user to run as (name or uid[:gid])")
	f.Int64Var(&req.TimeoutMS, "timeout-ms", 0, "kill the command after this many milliseconds")
	return cmd
}

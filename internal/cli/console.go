package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func newConsoleCommand(g *globals) *cobra.Command {
	var command string
	cmd := &cobra.Command{
		Use:   "console NAME --command CMD",
		Short: "Run a shell command in a VM (interactive console comes with the agent v1)",
		Long: `With --command, run CMD through /bin/sh -c in the VM, print its output and
exit with its exit code.`,
		Example:           `  mvmctl console web --command "uname -a"`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if command == "" {
				return usageError{errors.New("interactive console is not available yet; use --command CMD, or 'mvmctl exec NAME -- CMD'")}
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			exit, err := m.Exec(cmd.Context(), args[0], proto.ExecRequest{Argv: []string{"/bin/sh", "-c", command}}, nil, g.stdout, g.stderr)
			if err != nil {
				return err
			}
			if exit.Code != 0 {
				return &ExitError{Code: exit.Code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&command, "command", "", "run this shell command and exit with its code")
	return cmd
}

package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newDownCommand(g *globals) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:               "down NAME...",
		Aliases:           []string{"stop"},
		Short:             "Stop VMs (graceful shutdown, forced after --timeout)",
		ValidArgsFunction: completeVMNames(g),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("down needs at least one VM name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			var failed error
			for _, name := range args {
				rec, err := m.Down(cmd.Context(), name, timeout, force)
				if err != nil {
					fmt.Fprintln(g.stderr, "mvmctl:", err)
					failed = fmt.Errorf("%d of %d VMs not stopped", 1, len(args))
					continue
				}
				if g.json {
					_ = writeJSON(g.stdout, listItem(rec))
				} else {
					fmt.Fprintln(g.stdout, rec.Name)
				}
			}
			if failed != nil {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the VMM without asking the guest")
	cmd.Flags().DurationVarP(&timeout, "timeout", "t", 0, "how long to wait for a graceful shutdown (default 20s)")
	return cmd
}

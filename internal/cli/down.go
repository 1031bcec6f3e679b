package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
)

func newDownCommand(g *globals) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:               "down NAME...",
		Aliases:           []string{"stop"},
		Short:             "Stop VMs (graceful shutdown, forced after --timeout)",
		ValidArgsFunction: completeVMNames(g),
		Args:              minArgs(1, "VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return forEachName(g, args, func(name string) (*store.Record, error) {
				return m.Down(cmd.Context(), name, timeout, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the VMM without asking the guest")
	cmd.Flags().DurationVarP(&timeout, "timeout", "t", 0, "how long to wait for a graceful shutdown (default 20s)")
	return cmd
}

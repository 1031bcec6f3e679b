package cli

import (
	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
)

func newRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "rm NAME...",
		Aliases:           []string{"delete", "remove"},
		Short:             "Remove VMs and everything they own (-f: also running ones)",
		ValidArgsFunction: completeVMNames(g),
		Args:              minArgs(1, "VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return forEachName(g, args, func(name string) (*store.Record, error) {
				return nil, m.Remove(cmd.Context(), name, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill running VMs first")
	return cmd
}

package cli

import (
	"github.com/spf13/cobra"
)

// newInspectCommand prints everything known about a VM as JSON.
func newInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "inspect NAME",
		Short:             "Show a VM's record, live state, backend facts and resource sources (JSON)",
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			in, err := m.Inspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeJSON(g.stdout, in)
		},
	}
}

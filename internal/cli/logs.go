package cli

import (
	"github.com/spf13/cobra"
)

func newLogsCommand(g *globals) *cobra.Command {
	var follow bool
	var lines int
	cmd := &cobra.Command{
		Use:               "logs NAME",
		Short:             "Show a VM's serial console log",
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return m.Logs(cmd.Context(), args[0], lines, follow, g.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "print only the last N lines (0: all)")
	return cmd
}

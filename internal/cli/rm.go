package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "rm NAME...",
		Aliases:           []string{"delete", "remove"},
		Short:             "Remove VMs and everything they own (-f: also running ones)",
		ValidArgsFunction: completeVMNames(g),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("rm needs at least one VM name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			bad := 0
			for _, name := range args {
				if err := m.Remove(cmd.Context(), name, force); err != nil {
					fmt.Fprintln(g.stderr, "mvmctl:", err)
					bad++
					continue
				}
				fmt.Fprintln(g.stdout, name)
			}
			if bad > 0 {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill running VMs first")
	return cmd
}

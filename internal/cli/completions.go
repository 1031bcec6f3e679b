package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newCompletionsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:       "completions bash|zsh|fish",
		Aliases:   []string{"completion"},
		Short:     "Print a shell completion script",
		Example:   "  source <(mvmctl completions bash)",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      exactArgs(1, "one shell name: bash, zsh or fish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(g.stdout, true)
			case "zsh":
				return root.GenZshCompletion(g.stdout)
			case "fish":
				return root.GenFishCompletion(g.stdout, true)
			}
			return usageError{fmt.Errorf("unknown shell %q: use bash, zsh or fish", args[0])}
		},
	}
}

package cli

import (
	"os"

	"github.com/spf13/cobra"
)

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{}
	for _, s := range c.Commands() {
		if s.Hidden || s.Name() == "help" {
			continue
		}
		out = append(out, s)
		out = append(out, allCommands(s)...)
	}
	return out
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mvm-dev/mvm/internal/termsafe"
	"github.com/mvm-dev/mvm/internal/vm"
	"github.com/spf13/cobra"
)

func newEventsCommand(g *globals) *cobra.Command {
	var (
		interval time.Duration
		current  bool
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow VM state changes",
		Long: `Print a line whenever a VM appears, changes state (starting, running,
paused, stopped, failed...) or is removed, until interrupted. The VM
records are polled, reconciled with their VMMs as 'ls' does; a change that
comes and goes between two polls is not seen. With --json each line is a
JSON object: {"time", "vm", "from", "to", "reason"}.`,
		Example: "  mvmctl events\n  mvmctl events --json --current",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 50*time.Millisecond {
				return usageError{fmt.Errorf("--interval %s is too short (at least 50ms)", interval)}
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			return m.Watch(cmd.Context(), interval, current, func(c vm.StateChange) error {
				if g.json {
					return enc.Encode(c)
				}
				at := c.Time.Local().Format("15:04:05.000")
				var line string
				switch {
				case c.From == "":
					line = fmt.Sprintf("%s %s created, %s", at, c.VM, c.To)
				case c.To == "":
					line = fmt.Sprintf("%s %s removed", at, c.VM)
				default:
					line = fmt.Sprintf("%s %s %s -> %s", at, c.VM, c.From, c.To)
				}
				if c.Reason != "" {
					// The reason can hold guest console lines.
					line += " (" + termsafe.String(c.Reason) + ")"
				}
				_, err := fmt.Fprintln(g.stdout, line)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often to poll")
	cmd.Flags().BoolVar(&current, "current", false, "first report every existing VM in its present state")
	return cmd
}

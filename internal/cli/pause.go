package cli

import (
	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
)

// newPauseCommand freezes VMs.
func newPauseCommand(g *globals) *cobra.Command {
	return pauseResumeCommand(g, "pause", "Freeze running VMs (vCPUs stop; memory is kept)", true)
}

// newResumeCommand continues paused VMs.
func newResumeCommand(g *globals) *cobra.Command {
	return pauseResumeCommand(g, "resume", "Continue paused VMs", false)
}

func pauseResumeCommand(g *globals, verb, short string, pause bool) *cobra.Command {
	return &cobra.Command{
		Use:               verb + " NAME...",
		Short:             short,
		ValidArgsFunction: completeVMNames(g),
		Args:              minArgs(1, "VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			op := m.Resume
			if pause {
				op = m.Pause
			}
			return forEachName(g, args, func(name string) (*store.Record, error) {
				return op(cmd.Context(), name)
			})
		},
	}
}

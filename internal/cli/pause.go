package cli

import (
	"context"
	"fmt"

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
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("%s needs at least one VM name", verb)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			op := m.Resume
			if pause {
				op = m.Pause
			}
			return forEachVM(cmd.Context(), g, args, func(ctx context.Context, name string) (*store.Record, error) {
				return op(ctx, name)
			})
		},
	}
}

// forEachVM runs op on every name, prints each result, and fails (exit 1)
// if any failed, after trying them all.
func forEachVM(ctx context.Context, g *globals, names []string, op func(context.Context, string) (*store.Record, error)) error {
	bad := 0
	for _, name := range names {
		rec, err := op(ctx, name)
		if err != nil {
			fmt.Fprintln(g.stderr, "mvmctl:", err)
			bad++
			continue
		}
		if g.json {
			_ = writeJSON(g.stdout, listItem(rec))
		} else {
			fmt.Fprintln(g.stdout, rec.Name)
		}
	}
	if bad > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

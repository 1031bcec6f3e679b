package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/vm"
)

// newStartCommand boots a stopped VM again.
func newStartCommand(g *globals) *cobra.Command {
	var o vm.StartOptions
	var secrets []string
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Boot a stopped VM again (same name, directory and disk)",
		Long: `Boot a stopped VM again (same name, directory and disk).

mvmctl keeps no secret values: a VM created with --secret must be given
every secret again (--secret NAME=@FILE or NAME=env:VAR), or start refuses.`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStart(cmd, g, args[0], o, secrets, false)
		},
	}
	cmd.Flags().DurationVar(&o.BootTimeout, "timeout", 0, "how long to wait for the guest to become ready (default 3m)")
	cmd.Flags().StringArrayVar(&secrets, "secret", nil, vm.SecretFlagHelp)
	return cmd
}

// newRestartCommand stops a VM and boots it again.
func newRestartCommand(g *globals) *cobra.Command {
	var o vm.StartOptions
	var secrets []string
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop a VM and boot it again from the same record (disk kept)",
		Long: `Stop a VM and boot it again from the same record (disk kept).

mvmctl keeps no secret values: a VM created with --secret must be given
every secret again (--secret NAME=@FILE or NAME=env:VAR), or restart
refuses before stopping it.`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStart(cmd, g, args[0], o, secrets, true)
		},
	}
	cmd.Flags().StringArrayVar(&secrets, "secret", nil, vm.SecretFlagHelp)
	cmd.Flags().DurationVar(&o.BootTimeout, "timeout", 0, "how long to wait for the guest to become ready (default 3m)")
	cmd.Flags().DurationVar(&o.StopTimeout, "stop-timeout", 0, "how long to wait for a graceful shutdown (default 20s)")
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "kill the VMM instead of a graceful shutdown")
	return cmd
}

func runStart(cmd *cobra.Command, g *globals, name string, o vm.StartOptions, secrets []string, restart bool) error {
	var err error
	if o.Secrets, err = vm.ParseSecretFlags(secrets, nil); err != nil {
		return usageError{err}
	}
	m, err := g.manager()
	if err != nil {
		return err
	}
	pp := newProgress(g)
	o.Progress = pp.event
	began := time.Now()
	var rec *store.Record
	if restart {
		rec, err = m.Restart(cmd.Context(), name, o)
	} else {
		rec, err = m.Start(cmd.Context(), name, o)
	}
	pp.done()
	if err != nil {
		return err
	}
	if g.json {
		return writeJSON(g.stdout, struct {
			Type string `json:"type"`
			VM   any    `json:"vm"`
		}{"result", listItem(rec)})
	}
	fmt.Fprintln(g.stdout, rec.Name)
	fmt.Fprintf(g.stderr, "VM %s is running again — ready in %.1fs\n", rec.Name, time.Since(began).Seconds())
	return nil
}

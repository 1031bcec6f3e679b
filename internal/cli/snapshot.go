package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/vm"
)

// newSnapshotCommand groups snapshot create/ls/rm.
func newSnapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save running VMs and restore new ones from them ('up --from-snapshot')",
		Args:  exactArgs(0, "a subcommand: create, ls or rm"),
	}
	cmd.AddCommand(newSnapshotCreateCommand(g), newSnapshotLsCommand(g), newSnapshotRmCommand(g))
	return cmd
}

func newSnapshotCreateCommand(g *globals) *cobra.Command {
	var o vm.SnapshotOptions
	cmd := &cobra.Command{
		Use:   "create NAME [SNAPSHOT]",
		Short: "Save a running VM's memory, devices and disk (default name NAME-<timestamp>)",
		Long: `Save a running VM's memory, devices and disk (default name NAME-<timestamp>).

A VM given secrets (up --secret) is refused: the saved memory would hold
/run/secrets. With --drop-secrets the agent first zeroes and removes the
secrets and unmounts their tmpfs; the VM keeps running without them, and
VMs restored from the snapshot have none (give them with 'up --from-snapshot
... --secret').`,
		Example: `  mvmctl snapshot create web
  mvmctl snapshot create db db-clean --drop-secrets`,
		ValidArgsFunction: completeVMNames(g),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError{fmt.Errorf("snapshot create takes a VM name and an optional snapshot name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			snap := ""
			if len(args) == 2 {
				snap = args[1]
			}
			s, err := m.SnapshotCreateWith(cmd.Context(), args[0], snap, o)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, s)
			}
			fmt.Fprintln(g.stdout, s.Name)
			if len(s.DroppedSecrets) > 0 {
				fmt.Fprintf(g.stderr, "Dropped secrets %s from %s before saving; %s runs on without them.\n",
					strings.Join(s.DroppedSecrets, ", "), args[0], args[0])
			}
			fmt.Fprintf(g.stderr, "Saved %s in %.1fs (%s on disk). Restore with: mvmctl up --from-snapshot %s --name NEW\n",
				args[0], s.SaveSecs, humanBytes(s.DiskBytes), s.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.DropSecrets, "drop-secrets", false, "remove the VM's secrets (zeroed, tmpfs unmounted) before saving; required for a VM given --secret")
	return cmd
}

func newSnapshotLsCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshots",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			snaps, err := m.SnapshotList(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if snaps == nil {
					return writeJSON(g.stdout, []any{})
				}
				return writeJSON(g.stdout, snaps)
			}
			if f.set() {
				return f.write(g.stdout, snaps)
			}
			if len(snaps) == 0 {
				fmt.Fprintln(g.stderr, "No snapshots. Save a running VM with 'mvmctl snapshot create NAME'.")
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tSOURCE\tIMAGE\tCPUS\tMEMORY\tSIZE\tCREATED\tUSED BY")
			for _, s := range snaps {
				name := s.Name
				if !s.Complete {
					name += " (incomplete)"
				}
				used := "-"
				if len(s.UsedBy) > 0 {
					used = strings.Join(s.UsedBy, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dMiB\t%s\t%s\t%s\n", name, s.Source, s.Image, s.CPUs, s.MemoryMiB, humanBytes(s.DiskBytes), age(s.Created), used)
			}
			return tw.Flush()
		},
	}, &f, vm.Snapshot{})
}

func newSnapshotRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm SNAPSHOT...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove snapshots (refused while VMs restored from them exist, unless -f)",
		Args:    minArgs(1, "snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return forEachName(g, args, func(name string) (*store.Record, error) {
				return nil, m.SnapshotRemove(cmd.Context(), name, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if VMs restored from it still exist (their disks break)")
	return cmd
}

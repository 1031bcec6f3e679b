package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/update"
)

// uninstallItem is one thing uninstall removes.
type uninstallItem struct {
	Kind string `json:"kind"` // pool, vm, network, binary, directory
	Name string `json:"name"`
	Done bool   `json:"done"`
	Err  string `json:"error,omitempty"`
}

func newUninstallCommand(g *globals) *cobra.Command {
	var dryRun, purge, yes bool
	var dir string
	cmd := &cobra.Command{
		Use:   "uninstall [--dry-run] [--purge] [--yes]",
		Short: "Remove what mvm made on this host: its VMs, pools, networks and binaries (--purge: its data too)",
		Long: `Remove exactly what mvm created, in this order: warm pools, every VM (its
VMM, disks, TAPs and ports), every network (bridges, firewall rules, DNS
servers, Docker networks), then the installed binaries (mvmctl,
mvm-agent, mvm-supervisor, containerd-shim-mvm-v1 and kept .prev copies). Images, templates,
snapshots, keys and config stay unless --purge, which also deletes mvm's
cache, state, share and config directories. --dry-run lists it all and
removes nothing. Asks first on a terminal; elsewhere needs --yes.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := installDir(dir)
			if err != nil {
				return err
			}
			plan, err := uninstallPlan(cmd.Context(), g, d, purge)
			if err != nil {
				return err
			}
			if dryRun {
				return printUninstall(g, plan, "would remove")
			}
			if !yes && !confirm(g, fmt.Sprintf("Remove these %d things?%s", len(plan), planSummary(plan))) {
				return usageError{errors.New("nothing removed: confirm on a terminal or pass --yes (--dry-run lists what would go)")}
			}
			failed := runUninstall(cmd.Context(), g, plan)
			if err := printUninstall(g, plan, "removed"); err != nil {
				return err
			}
			if failed > 0 {
				return &ExitError{Code: 1, Err: fmt.Errorf("%d items could not be removed (see above); run uninstall again once fixed", failed)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
	f.BoolVar(&purge, "purge", false, "also delete images, templates, snapshots, keys, config and logs")
	f.BoolVarP(&yes, "yes", "y", false, "do not ask")
	f.StringVar(&dir, "install-dir", "", "directory of the installed binaries (default: mvmctl's own)")
	_ = f.MarkHidden("install-dir")
	return cmd
}

func planSummary(plan []uninstallItem) string {
	var b strings.Builder
	for _, it := range plan {
		fmt.Fprintf(&b, "\n  %-9s %s", it.Kind, it.Name)
	}
	return b.String() + "\n"
}

// uninstallPlan lists what uninstall removes, in removal order.
func uninstallPlan(ctx context.Context, g *globals, dir string, purge bool) ([]uninstallItem, error) {
	m, err := g.manager()
	if err != nil {
		return nil, err
	}
	var plan []uninstallItem
	pools, err := m.PoolList(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		plan = append(plan, uninstallItem{Kind: "pool", Name: p.Name})
	}
	recs, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		plan = append(plan, uninstallItem{Kind: "vm", Name: r.Name})
	}
	nets, err := m.Networks().List()
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		plan = append(plan, uninstallItem{Kind: "network", Name: n.Name})
	}
	for _, b := range update.Binaries {
		for _, name := range []string{b, b + update.PrevSuffix} {
			if fi, err := os.Lstat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
				plan = append(plan, uninstallItem{Kind: "binary", Name: filepath.Join(dir, name)})
			}
		}
	}
	if purge {
		for _, d := range []string{g.dirs.Cache, g.dirs.State, g.dirs.Share, g.dirs.Config} {
			if _, err := os.Stat(d); err == nil {
				plan = append(plan, uninstallItem{Kind: "directory", Name: d})
			}
		}
	}
	return plan, nil
}

// runUninstall removes each item, going on past failures, and returns how
// many failed.
func runUninstall(ctx context.Context, g *globals, plan []uninstallItem) int {
	m, _ := g.manager()
	failed := 0
	for i := range plan {
		it := &plan[i]
		var err error
		switch it.Kind {
		case "pool":
			err = m.PoolRemove(ctx, it.Name)
		case "vm":
			err = m.Remove(ctx, it.Name, true)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil // a pool's member, gone with its pool
			}
		case "network":
			// The VMs went first, so nothing is attached or running.
			_, err = m.Networks().Remove(ctx, it.Name, true, func(string) bool { return false })
		case "binary":
			err = os.Remove(it.Name)
		case "directory":
			err = os.RemoveAll(it.Name)
			if it.Name == g.dirs.State {
				g.purged = true
			}
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			it.Err = err.Error()
			failed++
			continue
		}
		it.Done = true
	}
	return failed
}

func printUninstall(g *globals, plan []uninstallItem, verb string) error {
	if g.json {
		if plan == nil {
			plan = []uninstallItem{}
		}
		return writeJSON(g.stdout, plan)
	}
	if len(plan) == 0 {
		fmt.Fprintln(g.stderr, "Nothing of mvm's to remove.")
		return nil
	}
	for _, it := range plan {
		state := verb
		if it.Err != "" {
			state = "FAILED: " + it.Err
		}
		fmt.Fprintf(g.stdout, "%-9s %-40s %s\n", it.Kind, it.Name, state)
	}
	return nil
}

package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/termsafe"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newDiffCommand(g *globals) *cobra.Command {
	var long bool
	cmd := &cobra.Command{
		Use:   "diff NAME",
		Short: "Show files changed in a VM since it booted from its image",
		Long: `Compare the VM's filesystem, listed by its guest agent, with the image it
booted from, and print one line per change like docker diff:

  A  added     C  changed     D  deleted

A directory that gained or lost an entry is changed; a deleted directory
hides what it held. Files written in the VM are compared by content
(sha256, up to 16 MiB), others by size and modification time. /proc, /sys,
/dev, /run, /tmp and /mnt/config are not compared. The first diff of an
image reads its root filesystem with debugfs (e2fsprogs) and caches it.

At most 200000 entries (64 MiB of paths) of the guest's listing are read.
Past that the changes found so far are printed (deletions left out, as
what was not received is unknown), --json says "truncated": true, and
mvmctl exits 1 with "output cut after N entries".`,
		Example:           "  mvmctl diff web\n  mvmctl diff web --json",
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			rep, err := m.Diff(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
				return rep.Err()
			}
			printDiff(g.stdout, g.stderr, rep, long)
			return rep.Err()
		},
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "say what changed (content, mode, owner, type, link, entries)")
	return cmd
}

// printDiff writes one line per change to w, and a warning per path the
// agent could not read to warn. Paths come from the guest: they are escaped,
// so a name cannot drive the terminal or forge another line.
func printDiff(w, warn io.Writer, rep *vm.DiffReport, long bool) {
	for _, c := range rep.Changes {
		if long && len(c.What) > 0 {
			fmt.Fprintf(w, "%s %s (%s)\n", c.Kind, termsafe.String(c.Path), termsafe.String(strings.Join(c.What, ", ")))
			continue
		}
		fmt.Fprintf(w, "%s %s\n", c.Kind, termsafe.String(c.Path))
	}
	for _, u := range rep.Unreadable {
		fmt.Fprintf(warn, "warning: not compared: %s\n", termsafe.String(u))
	}
}

package cli

import (
	"fmt"
	"runtime"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/termsafe"
)

// vmItem is the `ls --json` shape: stable field names for scripts.
type vmItem struct {
	Name        string            `json:"name"`
	State       string            `json:"state"`
	Reason      string            `json:"reason,omitempty"`
	Backend     string            `json:"backend"`
	Arch        string            `json:"arch"` // guest GOARCH
	Image       string            `json:"image"`
	ImageDigest string            `json:"image_digest,omitempty"`
	CPUs        int               `json:"cpus"`
	MemoryMiB   int               `json:"memory_mib"`
	PID         int               `json:"pid,omitempty"`
	Created     time.Time         `json:"created"`
	Dir         string            `json:"dir"`
	Sources     map[string]string `json:"sources,omitempty"`
	Snapshot    string            `json:"snapshot,omitempty"` // restored from
	Network     string            `json:"network,omitempty"`
	IP          string            `json:"ip,omitempty"`
	MAC         string            `json:"mac,omitempty"`
	Ports       []string          `json:"ports,omitempty"`
	FromPool    string            `json:"from_pool,omitempty"` // handed out by this warm pool
}

func listItem(r *store.Record) vmItem {
	it := vmItem{Name: r.Name, State: r.State, Reason: r.Reason, Backend: r.Backend, Image: r.Image,
		ImageDigest: r.ImageDigest, CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, PID: r.PID, Created: r.Created, Dir: r.Dir, Sources: r.Sources, Snapshot: r.Snapshot, FromPool: r.FromPool}
	if it.Arch = r.Arch; it.Arch == "" {
		it.Arch = runtime.GOARCH // records from before arch was kept
	}
	if n := r.Net; n != nil {
		it.Network, it.IP, it.MAC, it.Ports = n.Network, n.IP, n.MAC, n.Publish
	}
	return it
}

func newLsCommand(g *globals) *cobra.Command {
	var all bool
	var format string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"ps", "list"},
		Short:   "List VMs (running ones; -a for all)",
		Args:    exactArgs(0, "no arguments"),
		Example: `  mvmctl ls -a
  mvmctl ls --format '{{.Name}} {{.State}} {{.PID}}'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var tmpl *template.Template
			if format != "" {
				t, err := template.New("ls").Option("missingkey=error").Parse(format + "\n")
				if err != nil {
					return usageError{fmt.Errorf("--format: %w", err)}
				}
				tmpl = t
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			recs, err := m.List(cmd.Context())
			if err != nil {
				return err
			}
			items := []vmItem{}
			for _, r := range recs {
				if all || r.State != "stopped" {
					items = append(items, listItem(r))
				}
			}
			if g.json {
				return writeJSON(g.stdout, items)
			}
			if tmpl != nil {
				for _, it := range items {
					if err := tmpl.Execute(g.stdout, it); err != nil {
						return usageError{fmt.Errorf("--format: %w", err)}
					}
				}
				return nil
			}
			if len(items) == 0 {
				if all {
					fmt.Fprintln(g.stderr, "No VMs. Start one with 'mvmctl up'.")
				} else {
					fmt.Fprintln(g.stderr, "No running VMs ('mvmctl ls -a' shows stopped ones; start one with 'mvmctl up').")
				}
				if n := m.PooledCount(); n > 0 {
					fmt.Fprintf(g.stderr, "(%d wait in warm pools: 'mvmctl pool ls')\n", n)
				}
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tSTATE\tBACKEND\tIMAGE\tCPUS\tMEMORY\tPID\tNETWORK\tIP\tPORTS\tCREATED")
			for _, it := range items {
				pid := "-"
				if it.PID > 0 && it.State == "running" {
					pid = fmt.Sprint(it.PID)
				}
				state := it.State
				if it.Reason != "" && it.State == "failed" {
					// The reason can hold guest console lines.
					state += " (" + termsafe.String(it.Reason) + ")"
				}
				netName, ip, ports := "-", "-", "-"
				if it.Network != "" {
					netName = it.Network
				}
				if it.IP != "" {
					ip = it.IP
				}
				if len(it.Ports) > 0 {
					ports = strings.Join(it.Ports, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%dMiB\t%s\t%s\t%s\t%s\t%s\n", it.Name, state, it.Backend, it.Image, it.CPUs, it.MemoryMiB, pid, netName, ip, ports, age(it.Created))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// Pooled VMs are not the user's until handed out: counted apart.
			if n := m.PooledCount(); n > 0 {
				fmt.Fprintf(g.stderr, "(%d more wait in warm pools: 'mvmctl pool ls')\n", n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include stopped VMs")
	cmd.Flags().StringVar(&format, "format", "", "Go template per VM, e.g. '{{.Name}} {{.State}}' (fields as in --json: Name, State, Reason, Backend, Image, CPUs, MemoryMiB, PID, Created, Dir, Network, IP, MAC, Ports)")
	return cmd
}

package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/termsafe"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newPoolCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Warm pools: VMs restored ahead of time, handed out by up",
		Long: `A warm pool keeps --size VMs restored from a template's snapshot (or a
snapshot), re-provisioned, their first exec already run, idle (--keep
paused: paused). 'mvmctl
up --template T' takes one from a pool of T when one exists (and 'up --pool
NAME' explicitly): it gets the user's name, a new hostname, clock, entropy
and guest key, and is ready in tens of milliseconds; the pool refills in the
background. Pooled VMs are not in 'mvmctl ls'; 'pool inspect' lists them.`,
	}
	cmd.AddCommand(newPoolCreateCommand(g), newPoolLsCommand(g), newPoolInspectCommand(g), newPoolRmCommand(g), newPoolRefillCommand(g))
	return cmd
}

func newPoolCreateCommand(g *globals) *cobra.Command {
	var o vm.PoolCreateOptions
	var wait bool
	cmd := &cobra.Command{
		Use:   "create NAME (--template T | --from-snapshot S) --size N",
		Short: "Create a warm pool and start filling it",
		Example: `  mvmctl pool create web-pool --template web --size 3
  mvmctl pool create snap-pool --from-snapshot snap1 --size 2 --wait`,
		Args: exactArgs(1, "the pool's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if wait && o.Wait == 0 {
				o.Wait = 10 * time.Minute
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			st, err := m.PoolCreate(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, st)
			}
			fmt.Fprintf(g.stdout, "%s\n", st.Name)
			fmt.Fprintf(g.stderr, "Pool %s: %d of %d ready; it fills in the background (log: %s). Try: mvmctl up --pool %s\n", st.Name, st.Ready, st.Size, m.PoolLog(st.Name), st.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Template, "template", "t", "", "template whose snapshot the members restore")
	f.StringVar(&o.Snapshot, "from-snapshot", "", "snapshot the members restore")
	cmd.MarkFlagsMutuallyExclusive("template", "from-snapshot")
	f.IntVarP(&o.Size, "size", "n", 1, "how many ready VMs the pool keeps")
	f.StringVar(&o.Keep, "keep", vm.PoolKeepRunning, "how members wait: running (idle; fastest hand-out) or paused (no guest CPU; resumed at hand-out)")
	f.StringVar(&o.Backend, "backend", "", "backend of the members (default: the snapshot's)")
	f.BoolVar(&wait, "wait", false, "return once every member is ready")
	f.DurationVar(&o.Wait, "wait-timeout", 0, "with --wait: give up after this long (default 10m)")
	return cmd
}

func newPoolLsCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List warm pools and how full they are",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			pools, err := m.PoolList(cmd.Context())
			if err != nil {
				return err
			}
			if pools == nil {
				pools = []*vm.PoolStatus{}
			}
			for _, p := range pools {
				p.Members = nil // pool inspect lists them
			}
			if g.json {
				return writeJSON(g.stdout, pools)
			}
			if f.set() {
				return f.write(g.stdout, pools)
			}
			if len(pools) == 0 {
				fmt.Fprintln(g.stderr, "No pools. Make one with 'mvmctl pool create NAME --template T --size N'.")
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tFROM\tSIZE\tREADY\tWARMING\tFAILED\tKEEP\tREFILLING\tCREATED")
			for _, p := range pools {
				from := "template " + p.Template
				if p.Snapshot != "" {
					from = "snapshot " + p.Snapshot
				}
				refill := "no"
				if p.Refiller > 0 {
					refill = fmt.Sprintf("yes (pid %d)", p.Refiller)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", p.Name, from, p.Size, p.Ready, p.Warming, p.Failed, p.Keep, refill, age(p.Created))
			}
			return tw.Flush()
		},
	}, &f, vm.PoolStatus{})
}

func newPoolInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a pool and its members",
		Args:  exactArgs(1, "the pool's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			st, err := m.PoolInspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, st)
			}
			fmt.Fprintf(g.stdout, "pool %s: %d of %d ready, %d warming, %d failed (keep %s; log %s)\n", st.Name, st.Ready, st.Size, st.Warming, st.Failed, st.Keep, m.PoolLog(st.Name))
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "MEMBER\tSTATE\tREADY\tPID\tCREATED")
			for _, r := range st.Members {
				state := r.State
				if r.Reason != "" && r.State == "failed" {
					state += " (" + termsafe.String(r.Reason) + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\n", r.Name, state, r.PoolReady, r.PID, age(r.Created))
			}
			return tw.Flush()
		},
	}
}

func newPoolRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove pools: their refiller, every member and the record (VMs handed out stay)",
		Args:    minArgs(1, "at least one pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := m.PoolRemove(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(g.stdout, name)
			}
			return nil
		},
	}
}

func newPoolRefillCommand(g *globals) *cobra.Command {
	var delay time.Duration
	cmd := &cobra.Command{
		Use:    "refill NAME",
		Short:  "Fill a pool up to its size, then exit (started by pool create and up; internal)",
		Hidden: true,
		Args:   exactArgs(1, "the pool's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return m.PoolRefill(cmd.Context(), args[0], delay)
		},
	}
	cmd.Flags().DurationVar(&delay, "delay", 0, "wait this long before the first restore")
	return cmd
}

package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/vm"
)

func newUpCommand(g *globals) *cobra.Command {
	var o vm.UpOptions
	var memory string
	cmd := &cobra.Command{
		Use:     "up [--image IMAGE] [--name NAME]",
		Aliases: []string{"run", "start"},
		Short:   "Boot a new VM and wait until its agent answers",
		Example: `  mvmctl up
  mvmctl up --image minimal --name web --cpus 2 --memory 512M`,
		Args: exactArgs(0, "no arguments (use --name and --image)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if memory != "" {
				mib, err := vm.ParseSize(memory)
				if err != nil {
					return usageError{fmt.Errorf("--memory: %w", err)}
				}
				o.MemoryMiB = mib
			}
			if o.CPUs < 0 || o.CPUs > 255 {
				return usageError{fmt.Errorf("--cpus %d: must be between 1 and 255", o.CPUs)}
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			pp := &progressPrinter{w: g.stderr, json: g.json, tty: isTTY(g.stderr)}
			if g.json {
				pp.w = g.stdout
			}
			o.Progress = pp.event
			start := time.Now()
			rec, err := m.Up(cmd.Context(), o)
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
			fmt.Fprintf(g.stdout, "%s\n", rec.Name)
			fmt.Fprintf(g.stderr, "VM %s is running (%s, %d vCPU, %d MiB) — ready in %.1fs. Try: mvmctl exec %s -- uname -a\n",
				rec.Name, rec.Backend, rec.CPUs, rec.MemoryMiB, time.Since(start).Seconds(), rec.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "VM name (default: a random readable name)")
	f.StringVar(&o.Image, "image", "", "catalog image or recipe file to boot (default: minimal; see 'mvmctl image list')")
	f.StringVarP(&o.Image, "file", "f", "", "recipe file to build and boot (same as --image PATH)")
	f.StringVar(&o.Backend, "backend", "", "backend to use (default: chosen automatically)")
	f.IntVar(&o.CPUs, "cpus", 0, "number of vCPUs")
	f.StringVar(&memory, "memory", "", "memory size, e.g. 512M or 1G")
	cmd.MarkFlagsMutuallyExclusive("image", "file")
	f.DurationVar(&o.BootTimeout, "timeout", 0, "how long to wait for the guest to become ready (default 3m)")
	return cmd
}

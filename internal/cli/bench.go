package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/bench"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newBenchCommand(g *globals) *cobra.Command {
	var o bench.Options
	cmd := &cobra.Command{
		Use:   "bench [boot|restore|exec|pool|all]",
		Short: "Measure boot, restore, exec and the warm pool against raw baselines taken in the same run",
		Long: `Measure this mvmctl binary against the raw engines beneath it. Each figure
is printed next to its baseline, measured in the same run and interleaved
with it, with nearest-rank p50/p95/p99, the ratio of the p50s and the target:

  boot     cold up → first exec vs raw QEMU booting the same kernel,
           initramfs and disks with the same argv to the agent's ready
           marker (target ≤ 1.10×)
  restore  up --from-snapshot → first exec vs cold up → first exec (the
           target answer is the warm pool: see pool)
  exec     exec true on a running QEMU VM vs the agent's own round trip;
           exec true on the Docker backend vs docker exec on the same
           container (target ≤ 0.30×; skipped, with the reason, when Docker
           is not usable)
  pool     up --pool (a member of a warm pool of 3 handed out) → first
           exec vs cold up → first exec (target ≤ 0.03×), and vs a local
           up --from-snapshot → first exec (no target)
  all      every one (the default)

Every VM runs on QEMU without a NIC (Docker for the Docker figure), in the
bench's own state, config and share directories under a temp dir; the image
cache is MVM_CACHE_DIR when set, else a fresh one (the first run builds the
image). Every VM and the temp dir are removed on exit, on failure and on
Ctrl-C; the user's VMs, networks and config are not touched. A missed
target is reported, not an error.`,
		Example: `  mvmctl bench boot -n 1
  mvmctl bench all -n 5 --json`,
		ValidArgs: bench.Args,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("bench takes at most one of boot, restore, exec, pool, all (got %d arguments)", len(args))}
			}
			if len(args) == 1 {
				if _, err := bench.ParseKinds(args[0]); err != nil {
					return usageError{err}
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.N < 1 {
				return usageError{fmt.Errorf("-n must be at least 1 (got %d)", o.N)}
			}
			if o.ExecN < 0 {
				return usageError{fmt.Errorf("--exec-n must not be negative (got %d)", o.ExecN)}
			}
			kinds, err := bench.ParseKinds(firstArg(args))
			if err != nil {
				return usageError{err}
			}
			// The mvmctl side is this very binary, so what is measured is
			// what was built.
			if o.Mvmctl, err = os.Executable(); err != nil {
				return fmt.Errorf("find the running mvmctl: %w", err)
			}
			// A status line on a terminal only; stdout stays one result
			// (--json: one object), so no JSON progress lines.
			pp := &progressPrinter{w: g.stderr, tty: isTTY(g.stderr)}
			began := time.Now()
			o.Progress = func(msg string) {
				pp.event(vm.Event{Time: time.Now(), Stage: "bench", Message: msg, Elapsed: time.Since(began).Seconds()})
			}
			rep, err := bench.Run(cmd.Context(), o, kinds)
			pp.done()
			if rep == nil {
				return err
			}
			// The figures stand even when only the cleanup failed.
			if g.json {
				return errors.Join(writeJSON(g.stdout, rep), err)
			}
			return errors.Join(bench.WriteText(g.stdout, rep), err)
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.N, "iterations", "n", 5, "iterations of each boot and restore")
	f.IntVar(&o.ExecN, "exec-n", 0, fmt.Sprintf("exec round trips of each kind (default %d × -n)", bench.ExecPerRun))
	return cmd
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// Command lifecycle measures lifecycle costs against a built mvmctl, in one
// run: snapshot restore-to-exec vs cold up-to-exec (internal/bench's
// figure, as `mvmctl bench restore` prints it), snapshot create time and
// size, the supervisor's resident memory per VM, and `ls` with a few vs
// 200 more VM records. Like mvmctl bench it runs in temp directories (the
// image cache is MVM_CACHE_DIR when set) and removes every VM on exit.
//
//	go run ./bench/lifecycle -mvmctl bin/mvmctl [-runs 3]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/bench"
)

const opTimeout = 2 * time.Minute

func main() {
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary (mvm-agent next to it)")
	runs := flag.Int("runs", 3, "repetitions per timing; the median is reported")
	flag.Parse()
	// Ctrl-C cancels the run; the deferred Close still removes every VM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *mvmctl, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mvmctl string, runs int) (err error) {
	if mvmctl, err = filepath.Abs(mvmctl); err != nil {
		return err
	}
	e, err := bench.NewEnv(mvmctl)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	o := bench.Options{Mvmctl: mvmctl, N: runs}
	fig, err := e.Restore(ctx, o)
	if err != nil {
		return err
	}
	if err := bench.WriteText(os.Stdout, &bench.Report{Mvmctl: mvmctl, Iterations: runs, Figures: []bench.Figure{fig}}); err != nil {
		return err
	}
	fmt.Println()

	// A VM that stays up: snapshots of it, then its supervisor's RSS.
	if _, err := e.UpQEMU(ctx, "warm"); err != nil {
		return err
	}
	var saves []time.Duration
	for i := range runs {
		d, err := e.Timed(ctx, 15*time.Minute, "snapshot", "create", "warm", fmt.Sprintf("snap-%d", i))
		if err != nil {
			return err
		}
		saves = append(saves, d)
	}
	fmt.Printf("snapshot create      %8.3fs (median of %d)\n", median(saves).Seconds(), runs)
	if err := printSnapshotSizes(filepath.Join(e.Dirs.State, "snapshots", bench.RestoreSnapshot)); err != nil {
		return err
	}
	out, err := e.Run(ctx, opTimeout, "inspect", "warm")
	if err != nil {
		return err
	}
	var in struct {
		Backend struct {
			Pids struct{ Supervisor, VMM int } `json:"pids"`
		} `json:"backend"`
	}
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		return fmt.Errorf("decode inspect: %w", err)
	}
	fmt.Printf("supervisor RSS       %8s (pid %d); QEMU RSS %s\n", vmRSS(in.Backend.Pids.Supervisor), in.Backend.Pids.Supervisor, vmRSS(in.Backend.Pids.VMM))

	// ls with the running VM vs 200 more: stub records of stopped VMs,
	// which reconcile still opens.
	lsTime := func() (time.Duration, error) {
		var ds []time.Duration
		for range 5 {
			d, err := e.Timed(ctx, opTimeout, "ls", "-a", "--json")
			if err != nil {
				return 0, err
			}
			ds = append(ds, d)
		}
		return median(ds), nil
	}
	base, err := lsTime()
	if err != nil {
		return err
	}
	for i := range 200 {
		dir := e.Dirs.VMDir(fmt.Sprintf("fake-%03d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		rec := fmt.Sprintf(`{"name":"fake-%03d","state":"stopped","backend":"qemu","image":"minimal","cpus":1,"memory_mib":128,"created":"2024-01-01T00:00:00Z","dir":%q}`, i, dir)
		if err := os.WriteFile(filepath.Join(dir, "vm.json"), []byte(rec), 0o600); err != nil {
			return err
		}
	}
	many, err := lsTime()
	if err != nil {
		return err
	}
	// Close would rm each fake one by one; they hold nothing.
	for i := range 200 {
		_ = os.RemoveAll(e.Dirs.VMDir(fmt.Sprintf("fake-%03d", i)))
	}
	fmt.Printf("ls -a, few records   %8.3fs\nls -a, +200 records  %8.3fs  ratio %.2fx (goal <= 2x)\n", base.Seconds(), many.Seconds(), many.Seconds()/base.Seconds())
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return bench.Percentile(s, 50)
}

// printSnapshotSizes reports what the QEMU backend wrote: the migration
// stream and, when RAM was saved to a file beside it, that file.
func printSnapshotSizes(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "snapshot.json"))
	if err != nil {
		return err
	}
	var m struct {
		StateBytes  int64  `json:"state_bytes"`
		Memory      string `json:"memory"`
		MemoryBytes int64  `json:"memory_bytes"`
		MemoryMiB   int    `json:"memory_mib"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("decode snapshot.json: %w", err)
	}
	fmt.Printf("snapshot state file  %8.1f KiB", float64(m.StateBytes)/1024)
	if m.Memory != "" {
		fmt.Printf("; RAM file %.1f MiB allocated of %d MiB", float64(m.MemoryBytes)/(1<<20), m.MemoryMiB)
	} else {
		fmt.Print(" (RAM inside)")
	}
	fmt.Println()
	return nil
}

func vmRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.Join(strings.Fields(strings.TrimPrefix(l, "VmRSS:")), " ")
		}
	}
	return "?"
}

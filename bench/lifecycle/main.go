// Command lifecycle measures lifecycle costs against a built mvmctl, in one
// run: cold up-to-exec vs snapshot restore-to-exec, `ls` with 1 vs 200 VM
// records, and the supervisor's resident memory per VM.
//
//	go run ./bench/lifecycle -mvmctl bin/mvmctl
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

var (
	mvmctl = flag.String("mvmctl", "bin/mvmctl", "mvmctl binary (mvm-agent next to it)")
	cache  = flag.String("cache", "", "image cache dir to reuse (default: a fresh one; the first up builds the image)")
	runs   = flag.Int("runs", 3, "repetitions per timing; the median is reported")
	memory = flag.String("memory", "128M", "VM memory")
	bend   = flag.String("backend", "qemu", "backend to boot on (auto selection may pick one without snapshots)")
)

func main() {
	// VMs are removed by deferred calls: a closed stdout (| head) or Ctrl-C
	// must not end us before they have run (the mvmctl children get SIGINT
	// themselves, fail, and the run unwinds).
	signal.Ignore(syscall.SIGPIPE)
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM)
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

var env []string

func mvm(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, *mvmctl, args...)
	cmd.Env = env
	var se strings.Builder
	cmd.Stderr = &se
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("mvmctl %v: %w: %s", args, err, se.String())
	}
	return string(out), nil
}

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

func median(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// spread is "min–max" of d in seconds.
func spread(d []time.Duration) string {
	lo, hi := slices.Min(d), slices.Max(d)
	return fmt.Sprintf("%.3f–%.3fs", lo.Seconds(), hi.Seconds())
}

func run() error {
	root, err := os.MkdirTemp("", "mvmb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	c := *cache
	if c == "" {
		c = filepath.Join(root, "cache")
	}
	env = append(os.Environ(), "MVM_STATE_DIR="+filepath.Join(root, "st"), "MVM_CACHE_DIR="+c,
		"MVM_CONFIG_DIR="+filepath.Join(root, "cfg"), "MVM_SHARE_DIR="+filepath.Join(root, "sh"))
	defer func() {
		out, _ := mvm(time.Minute, "ls", "-a", "--format", "{{.Name}}")
		for _, n := range strings.Fields(out) {
			mvm(time.Minute, "rm", "-f", n)
		}
	}()

	// Warm the image cache so cold boots measure booting, not building.
	if _, err := mvm(15*time.Minute, "up", "--name", "warm", "--backend", *bend, "--memory", *memory); err != nil {
		return err
	}
	var saves []time.Duration
	for i := range *runs {
		// Each save is a fresh snapshot of the same VM; the last one stays.
		if i > 0 {
			if _, err := mvm(time.Minute, "snapshot", "rm", "snap"); err != nil {
				return err
			}
		}
		d, err := timed(func() error { _, err := mvm(time.Minute, "snapshot", "create", "warm", "snap"); return err })
		if err != nil {
			return err
		}
		saves = append(saves, d)
	}
	var cold, coldUp, restore, restoreUp []time.Duration
	// upExec times `up ARGS...` then `exec NAME -- true`.
	upExec := func(name string, args ...string) (total, up time.Duration, err error) {
		t := time.Now()
		if _, err := mvm(5*time.Minute, append([]string{"up", "--name", name}, args...)...); err != nil {
			return 0, 0, err
		}
		up = time.Since(t)
		if _, err := mvm(time.Minute, "exec", name, "--", "true"); err != nil {
			return 0, 0, err
		}
		return time.Since(t), up, nil
	}
	for i := range *runs {
		name := fmt.Sprintf("cold-%d", i)
		d, u, err := upExec(name, "--backend", *bend, "--memory", *memory)
		if err != nil {
			return err
		}
		cold, coldUp = append(cold, d), append(coldUp, u)
		mvm(time.Minute, "rm", "-f", name)

		name = fmt.Sprintf("clone-%d", i)
		d, u, err = upExec(name, "--from-snapshot", "snap")
		if err != nil {
			return err
		}
		restore, restoreUp = append(restore, d), append(restoreUp, u)
		if i < *runs-1 {
			mvm(time.Minute, "rm", "-f", name)
		}
	}
	mc, mr := median(cold), median(restore)
	// Under TCG one run swings by 10% with host load: show the spread too.
	fmt.Printf("cold up-to-exec      %8.3fs (median of %d, range %s; up %.3fs)\n", mc.Seconds(), *runs, spread(cold), median(coldUp).Seconds())
	fmt.Printf("restore-to-exec      %8.3fs (median of %d, range %s; up %.3fs)  ratio %.3fx (goal <= 0.10x)\n",
		mr.Seconds(), *runs, spread(restore), median(restoreUp).Seconds(), mr.Seconds()/mc.Seconds())
	fmt.Printf("snapshot create      %8.3fs (median of %d)\n", median(saves).Seconds(), *runs)
	if err := printSnapshotSizes(filepath.Join(root, "st", "snapshots", "snap")); err != nil {
		return err
	}

	// Supervisor RSS of a running VM.
	out, err := mvm(time.Minute, "inspect", "warm")
	if err != nil {
		return err
	}
	var in struct {
		Backend struct {
			Pids struct{ Supervisor, VMM int } `json:"pids"`
		} `json:"backend"`
	}
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		return err
	}
	fmt.Printf("supervisor RSS       %8s (pid %d); QEMU RSS %s\n", vmRSS(in.Backend.Pids.Supervisor), in.Backend.Pids.Supervisor, vmRSS(in.Backend.Pids.VMM))

	// ls with 1 record vs 200 (+ the running ones): stub records of stopped
	// VMs, which reconcile still opens.
	lsTime := func() (time.Duration, error) {
		var ds []time.Duration
		for range 5 {
			d, err := timed(func() error { _, err := mvm(time.Minute, "ls", "-a", "--json"); return err })
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
	vms := filepath.Join(root, "st", "vms")
	for i := range 200 {
		dir := filepath.Join(vms, fmt.Sprintf("fake-%03d", i))
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
	fmt.Printf("ls -a, few records   %8.3fs\nls -a, +200 records  %8.3fs  ratio %.2fx (goal <= 2x)\n", base.Seconds(), many.Seconds(), many.Seconds()/base.Seconds())
	return nil
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

// Command boot measures cold `mvmctl up` → first successful `exec` against
// raw QEMU booting the same kernel, initramfs and disks with the same argv to
// the agent's ready marker on the serial console, in the same run, and prints
// both and their ratio. Run it with `make bench` (or bench/boot/run.sh).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const readyMarker = "mvm-agent: ready"

func main() {
	// VMs are removed by deferred calls: a closed stdout (| head) or Ctrl-C
	// must not end us before they have run (the mvmctl children get SIGINT
	// themselves, fail, and the run unwinds).
	signal.Ignore(syscall.SIGPIPE)
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM)
	n := flag.Int("n", 5, "iterations of each")
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	if err := run(*mvmctl, *n, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(mvmctl string, n int, asJSON bool) error {
	root, err := os.MkdirTemp("", "mvmbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	env := append(os.Environ(), "MVM_STATE_DIR="+filepath.Join(root, "state"), "MVM_CONFIG_DIR="+filepath.Join(root, "config"),
		"MVM_SHARE_DIR="+filepath.Join(root, "share"))
	if os.Getenv("MVM_CACHE_DIR") == "" {
		env = append(env, "MVM_CACHE_DIR="+filepath.Join(root, "cache"))
	}
	mvm := func(args ...string) error {
		cmd := exec.Command(mvmctl, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("mvmctl %v: %v\n%s", args, err, out)
		}
		return nil
	}
	// Warm the image cache and capture the exact QEMU argv mvmctl uses.
	// Pinned to QEMU (auto-selection picks Docker on hosts without KVM),
	// and without a NIC: the raw baseline has none.
	up := []string{"up", "--backend", "qemu", "--network", "none"}
	if err := mvm(append(up, "--name", "bench-ref")...); err != nil {
		return err
	}
	refDir := filepath.Join(root, "state", "vms", "bench-ref")
	var sup struct {
		Argv []string `json:"argv"`
	}
	b, err := os.ReadFile(filepath.Join(refDir, "supervisor.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &sup); err != nil {
		return err
	}
	if err := mvm("down", "bench-ref"); err != nil {
		return err
	}
	serial := filepath.Join(root, "raw-serial.log")
	raw, err := rawArgv(sup.Argv, serial)
	if err != nil {
		return err
	}

	var mvmT, rawT []time.Duration
	for i := 0; i < n; i++ {
		// mvmctl: up (image cached) then the first exec.
		name := fmt.Sprintf("bench-%d", i)
		t0 := time.Now()
		if err := mvm(append(up, "--name", name)...); err != nil {
			return err
		}
		if err := mvm("exec", name, "--", "true"); err != nil {
			return err
		}
		mvmT = append(mvmT, time.Since(t0))
		if err := mvm("rm", "-f", name); err != nil {
			return err
		}

		d, err := rawBoot(raw, serial)
		if err != nil {
			return err
		}
		rawT = append(rawT, d)
	}
	_ = mvm("rm", "-f", "bench-ref")
	mm, rm := median(mvmT), median(rawT)
	ratio := float64(mm) / float64(rm)
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"iterations": n, "mvm_up_exec_median_s": mm.Seconds(), "raw_qemu_ready_median_s": rm.Seconds(),
			"ratio": ratio, "mvm_s": secs(mvmT), "raw_s": secs(rawT), "target_ratio": 1.10,
		})
	}
	fmt.Printf("boot benchmark (%d runs each, medians)\n", n)
	fmt.Printf("  mvmctl up → first exec OK : %6.3fs  %v\n", mm.Seconds(), secs(mvmT))
	fmt.Printf("  raw QEMU → agent ready    : %6.3fs  %v\n", rm.Seconds(), secs(rawT))
	fmt.Printf("  ratio                     : %6.3f  (target ≤ 1.10)\n", ratio)
	return nil
}

// rawBoot runs QEMU with argv until the serial log shows the ready marker.
func rawBoot(argv []string, serial string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = os.Remove(serial)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for ctx.Err() == nil {
		if b, err := os.ReadFile(serial); err == nil && bytes.Contains(b, []byte(readyMarker)) {
			return time.Since(t0), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("raw QEMU never printed %q: %s", readyMarker, stderr.String())
}

// rawArgv is mvm's QEMU argv made to run without the supervisor: the
// console chardev (a socket the supervisor hands over as a descriptor)
// writes the file serial instead, and the agent port goes nowhere.
func rawArgv(argv []string, serial string) ([]string, error) {
	out := append([]string(nil), argv...)
	found := false
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-chardev" {
			continue
		}
		switch id := chardevID(out[i+1]); id {
		case "console":
			out[i+1] = "file,id=console,path=" + strings.ReplaceAll(serial, ",", ",,")
			found = true
		default:
			if strings.Contains(out[i+1], "fd=") {
				out[i+1] = "null,id=" + id
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("no console chardev in the QEMU argv: %v", argv)
	}
	return out, nil
}

func chardevID(opts string) string {
	for _, kv := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(kv, "id="); ok {
			return v
		}
	}
	return ""
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func secs(d []time.Duration) []string {
	var out []string
	for _, v := range d {
		out = append(out, fmt.Sprintf("%.2f", v.Seconds()))
	}
	return out
}

// Command image measures the image builder through mvmctl: a cold build of
// each catalog image into an empty cache, the cache-hit rebuild (`mvmctl
// image fetch` of an image already cached; goal ≤ 0.2 s), and the root
// filesystem's apparent and allocated size. Debian-based images bootstrap
// from the host's apt mirror and take a minute or more each, so only the
// minimal-based ones run unless -all is given.
//
//	go run ./bench/image -mvmctl bin/mvmctl [-all] [-n 5] [-json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// hitGoal is the cache-hit target from the issue.
const hitGoal = 200 * time.Millisecond

type result struct {
	Image          string    `json:"image"`
	Rootfs         string    `json:"rootfs_source"`
	ColdS          float64   `json:"cold_build_s"`
	HitMedianS     float64   `json:"cache_hit_median_s"`
	HitS           []float64 `json:"cache_hit_s"`
	ApparentBytes  int64     `json:"rootfs_apparent_bytes"`
	AllocatedBytes int64     `json:"rootfs_allocated_bytes"`
}

func main() {
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary (mvm-agent must sit next to it)")
	all := flag.Bool("all", false, "include Debian-based images (slow: each bootstraps from the apt mirror)")
	n := flag.Int("n", 5, "cache-hit runs per image")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	if err := run(*mvmctl, *all, *n, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "bench/image:", err)
		os.Exit(1)
	}
}

type catalogItem struct {
	Name   string `json:"name"`
	Rootfs string `json:"rootfs"`
}

func run(mvmctl string, all bool, n int, asJSON bool) error {
	if n < 1 {
		return fmt.Errorf("-n %d: want at least 1", n)
	}
	root, err := os.MkdirTemp("", "mvmbenchimg")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	baseEnv := append(os.Environ(), "MVM_STATE_DIR="+filepath.Join(root, "state"), "MVM_CONFIG_DIR="+filepath.Join(root, "config"))

	var items []catalogItem
	out, err := mvm(mvmctl, append(baseEnv, "MVM_CACHE_DIR="+filepath.Join(root, "list")), "image", "list", "--json")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, &items); err != nil {
		return fmt.Errorf("image list: %w", err)
	}
	var results []result
	for _, it := range items {
		if !all && it.Rootfs != "minimal" {
			continue
		}
		// A fresh cache per image: the cold build pays for everything,
		// Debian bootstrap included.
		env := append(baseEnv, "MVM_CACHE_DIR="+filepath.Join(root, "cache-"+it.Name))
		if !asJSON {
			fmt.Fprintf(os.Stderr, "building %s ...\n", it.Name)
		}
		t0 := time.Now()
		out, err := mvm(mvmctl, env, "image", "fetch", "--json", it.Name)
		if err != nil {
			return err
		}
		r := result{Image: it.Name, Rootfs: it.Rootfs, ColdS: time.Since(t0).Seconds()}
		var res struct {
			Image struct {
				Rootfs string `json:"rootfs"`
			} `json:"image"`
		}
		if err := json.Unmarshal(lastJSON(out), &res); err != nil || res.Image.Rootfs == "" {
			return fmt.Errorf("image fetch %s: no result in output: %v\n%s", it.Name, err, out)
		}
		var hits []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if _, err := mvm(mvmctl, env, "image", "fetch", it.Name); err != nil {
				return err
			}
			hits = append(hits, time.Since(t0))
			r.HitS = append(r.HitS, time.Since(t0).Seconds())
		}
		r.HitMedianS = median(hits).Seconds()
		var st syscall.Stat_t
		if err := syscall.Stat(res.Image.Rootfs, &st); err != nil {
			return fmt.Errorf("stat rootfs: %w", err)
		}
		r.ApparentBytes, r.AllocatedBytes = st.Size, st.Blocks*512
		results = append(results, r)
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"cache_hit_goal_s": hitGoal.Seconds(), "hit_runs": n, "images": results})
	}
	fmt.Printf("image benchmark (cold build into an empty cache; cache hit = median of %d `image fetch` runs, goal ≤ %.1fs)\n", n, hitGoal.Seconds())
	fmt.Printf("  %-10s %-16s %9s %9s %12s %12s\n", "IMAGE", "ROOTFS", "COLD", "HIT", "APPARENT", "ALLOCATED")
	for _, r := range results {
		mark := ""
		if r.HitMedianS > hitGoal.Seconds() {
			mark = "  (over goal)"
		}
		fmt.Printf("  %-10s %-16s %8.2fs %8.3fs %12s %12s%s\n", r.Image, r.Rootfs, r.ColdS, r.HitMedianS, mib(r.ApparentBytes), mib(r.AllocatedBytes), mark)
	}
	if !all {
		fmt.Println("  (Debian-based images skipped; run with -all to include them)")
	}
	return nil
}

// mvm runs mvmctl and returns its stdout.
func mvm(bin string, env []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stderr []byte
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		return nil, fmt.Errorf("mvmctl %v: %v\n%s", args, err, stderr)
	}
	return out, nil
}

// lastJSON returns the final JSON document of `--json` output (progress
// lines come first, one per line; the result is indented).
func lastJSON(out []byte) []byte {
	for i := 0; i < len(out); i++ {
		if out[i] == '{' && (i == 0 || out[i-1] == '\n') && i+1 < len(out) && out[i+1] == '\n' {
			return out[i:]
		}
	}
	return out
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

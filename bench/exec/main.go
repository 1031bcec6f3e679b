// Command exec measures exec latency against a running VM of the user's:
// each iteration is one full agent operation (connection, mutual TLS
// handshake, exec, exit) as mvmctl does it, minus the process. It prints
// nearest-rank p50/p95/p99. The measurement is internal/bench's; `mvmctl
// bench exec` runs it on a VM of its own, next to `mvmctl exec` itself.
//
//	go run ./bench/exec -vm NAME [-n 200] [-cmd /bin/true]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/bench"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/vm"

	_ "github.com/mvm-dev/mvm/internal/backend/docker"
	_ "github.com/mvm-dev/mvm/internal/backend/qemu"
)

func main() {
	name := flag.String("vm", "", "running VM to measure")
	n := flag.Int("n", 200, "iterations")
	cmd := flag.String("cmd", "/bin/true", "command to run (split on spaces)")
	flag.Parse()
	if *name == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: exec -vm NAME [-n 200] [-cmd /bin/true]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *name, *n, strings.Fields(*cmd)); err != nil {
		fmt.Fprintln(os.Stderr, "bench exec:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name string, n int, argv []string) error {
	dirs, err := paths.Resolve()
	if err != nil {
		return err
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	lat, err := bench.AgentRoundTrips(ctx, vm.New(dirs, cfg, nil), name, argv, n)
	if err != nil {
		return err
	}
	var took time.Duration
	for _, d := range lat {
		took += d
	}
	s := bench.NewSeries("", lat)
	r := func(d bench.Seconds) time.Duration { return time.Duration(d).Round(10 * time.Microsecond) }
	fmt.Printf("exec %v on %s: n=%d p50=%v p95=%v p99=%v max=%v (%.0f ops/s)\n",
		argv, name, n, r(s.P50), r(s.P95), r(s.P99), slices.Max(lat).Round(10*time.Microsecond),
		float64(n)/took.Seconds())
	return nil
}

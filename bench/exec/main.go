// Command exec measures `mvmctl exec` latency against a running VM: each
// iteration is one full agent operation (connection, mutual TLS handshake,
// exec of /bin/true, exit), as mvmctl does it. It prints p50/p95/p99.
//
//	go run ./bench/exec -vm NAME [-n 200] [-cmd /bin/true]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
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
	if err := run(*name, *n, strings.Fields(*cmd)); err != nil {
		fmt.Fprintln(os.Stderr, "bench exec:", err)
		os.Exit(1)
	}
}

func run(name string, n int, argv []string) error {
	dirs, err := paths.Resolve()
	if err != nil {
		return err
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return err
	}
	m := vm.New(dirs, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := m.Agent(ctx, name, "benchmark")
	if err != nil {
		return err
	}
	req := proto.ExecRequest{Argv: argv}
	// One warm-up: page cache, first TLS config use.
	if _, err := c.Exec(ctx, req, nil, nil, nil); err != nil {
		return err
	}
	lat := make([]time.Duration, 0, n)
	began := time.Now()
	for range n {
		t := time.Now()
		exit, err := c.Exec(ctx, req, nil, nil, nil)
		if err != nil {
			return err
		}
		if exit.Code != 0 {
			return fmt.Errorf("%v exited %d", argv, exit.Code)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("exec %v on %s: n=%d p50=%v p95=%v p99=%v max=%v (%.0f ops/s)\n",
		argv, name, n, pct(0.50).Round(10*time.Microsecond), pct(0.95).Round(10*time.Microsecond),
		pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond),
		float64(n)/time.Since(began).Seconds())
	return nil
}

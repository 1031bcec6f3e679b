package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// env is everything the bench creates: network namespaces of its own —
// mvm's (mvmctl, its VMs and networks), raw QEMU's (the baseline's bridge
// and TAP; none of mvm's nftables rules or conntrack there; not made in
// egress mode) and the sink's, reached from both over veths on the bridges
// (in egress mode: mvm's uplink, and the fake internet) — a temporary
// directory, and the cleanups that undo them, run last-in first-out.
type env struct {
	ns, rawNS, sinkNS string // namespace names
	nsH, rawH, sinkH  netns.NsHandle
	dir               string
	cleanups          []cleanup
	verbose           bool
}

type cleanup struct {
	what string
	fn   func() error
}

// onExit registers fn to undo something just about to be made.
func (e *env) onExit(what string, fn func() error) {
	e.cleanups = append(e.cleanups, cleanup{what, fn})
}

// teardown runs every cleanup, newest first, and reports the ones that
// failed. It never stops half-way.
func (e *env) teardown() []string {
	var failed []string
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		c := e.cleanups[i]
		if err := c.fn(); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.what, err))
		}
	}
	e.cleanups = nil
	return failed
}

func (e *env) logf(format string, a ...any) {
	if e.verbose {
		fmt.Fprintf(os.Stderr, "bench/net: "+format+"\n", a...)
	}
}

// newEnv makes the temporary directory and the namespaces with their
// loopbacks up (raw QEMU's only with raw). On error what was made is
// already registered for teardown.
func newEnv(e *env, raw bool) error {
	dir, err := os.MkdirTemp("", "mvmbench-net-")
	if err != nil {
		return err
	}
	e.dir = dir
	e.onExit("remove "+dir, func() error { return os.RemoveAll(dir) })
	pid := os.Getpid()
	e.ns = fmt.Sprintf("mvmbench-%d", pid)
	e.sinkNS = fmt.Sprintf("mvmbench-%d-sink", pid)
	type slot struct {
		name string
		dst  *netns.NsHandle
	}
	handles := []slot{{e.ns, &e.nsH}, {e.sinkNS, &e.sinkH}}
	if raw {
		e.rawNS = fmt.Sprintf("mvmbench-%d-raw", pid)
		handles = append(handles, slot{e.rawNS, &e.rawH})
	}
	for _, h := range handles {
		name := h.name
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			return fmt.Errorf("network namespace %s already exists (a previous run with the same pid?): refusing to touch it", name)
		}
		if err := run(context.Background(), "ip", "netns", "add", name); err != nil {
			return err
		}
		e.onExit("delete namespace "+name, func() error { return deleteNS(name) })
		if err := ipIn(name, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, h := range handles {
		if *h.dst, err = netns.GetFromName(h.name); err != nil {
			return fmt.Errorf("open namespace %s: %w", h.name, err)
		}
		dst := h.dst
		e.onExit("close "+h.name, func() error { return dst.Close() })
	}
	return nil
}

// deleteNS ends whatever still runs inside the namespace (only what this
// bench started can be there: mvmctl's supervisors, QEMUs, DNS servers),
// then deletes it; its links go with it.
func deleteNS(name string) error {
	for attempt := 0; attempt < 2; attempt++ {
		pids := nsPids(name)
		if len(pids) == 0 {
			break
		}
		sig := syscall.SIGTERM
		if attempt > 0 {
			sig = syscall.SIGKILL
		}
		for _, p := range pids {
			_ = syscall.Kill(p, sig)
		}
		for i := 0; i < 50 && len(nsPids(name)) > 0; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if left := nsPids(name); len(left) > 0 {
		return fmt.Errorf("processes %v still run in %s", left, name)
	}
	return run(context.Background(), "ip", "netns", "delete", name)
}

func nsPids(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

// inNS runs fn on a thread that entered namespace ns (the calling
// process's own when ns is nil). Sockets fn opens stay in ns whichever
// thread uses them later. The thread is never switched back: the goroutine
// ends locked, so the runtime retires it.
func inNS(ns *netns.NsHandle, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		if ns != nil {
			runtime.LockOSThread()
			if err := netns.Set(*ns); err != nil {
				ch <- fmt.Errorf("enter namespace: %w", err)
				return
			}
		}
		ch <- fn()
	}()
	return <-ch
}

// ipIn runs `ip -n NS ARGS...`.
func ipIn(ns string, args ...string) error {
	return run(context.Background(), "ip", append([]string{"-n", ns}, args...)...)
}

// run runs a command and returns its output in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, nil, name, args...)
	return err
}

// output runs a command with env (nil: ours) and returns its stdout.
func output(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// veth puts a veth pair between namespace from (end a, enslaved to bridge
// br there unless br is "") and the sink namespace (end b, with address
// cidr), both up with mtu.
func (e *env) veth(from, a, b, br, cidr string, mtu int) error {
	if err := ipIn(from, "link", "add", a, "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", b, "netns", e.sinkNS); err != nil {
		return err
	}
	e.onExit("delete link "+a, func() error { return delLink(from, a) })
	steps := [][]string{
		{"-n", from, "link", "set", a, "up"},
		{"-n", e.sinkNS, "addr", "add", cidr, "dev", b},
		{"-n", e.sinkNS, "link", "set", b, "up"},
	}
	if br != "" {
		steps = append([][]string{{"-n", from, "link", "set", a, "master", br}}, steps...)
	}
	for _, args := range steps {
		if err := run(context.Background(), "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// delLink deletes link name in ns; one already gone is fine.
func delLink(ns, name string) error {
	if run(context.Background(), "ip", "-n", ns, "link", "show", "dev", name) != nil {
		return nil
	}
	return ipIn(ns, "link", "delete", name)
}

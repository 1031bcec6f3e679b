package qemu

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// procStatus reads the fields of /proc/pid/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	f := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			f[k] = strings.TrimSpace(v)
		}
	}
	return f
}

// checkConfined asserts that the QEMU of h runs under seccomp and, when the
// test runs as root, as another user without capabilities.
func checkConfined(t *testing.T, what string, h backend.Handle) {
	t.Helper()
	p, err := supervisor.ReadPids(h.(*Handle).Dir())
	if err != nil || !p.VMM.Alive() {
		t.Fatalf("%s: no QEMU: %+v %v", what, p, err)
	}
	st := procStatus(t, p.VMM.Pid)
	if st["Seccomp"] != "2" {
		t.Errorf("%s: QEMU pid %d Seccomp %q, want 2 (filter mode)", what, p.VMM.Pid, st["Seccomp"])
	}
	if st["NoNewPrivs"] != "1" {
		t.Errorf("%s: NoNewPrivs %q", what, st["NoNewPrivs"])
	}
	uids := strings.Fields(st["Uid"])
	if os.Geteuid() != 0 {
		t.Logf("%s: not root: QEMU keeps the test's user (Uid %s); -runas is not checked", what, st["Uid"])
		return
	}
	if len(uids) != 4 {
		t.Fatalf("%s: Uid %q", what, st["Uid"])
	}
	for _, u := range append(uids, strings.Fields(st["Gid"])...) {
		if u == "0" {
			t.Errorf("%s: QEMU runs with Uid %q Gid %q; want no root id left", what, st["Uid"], st["Gid"])
			break
		}
	}
	if st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
		t.Errorf("%s: capabilities eff %s prm %s", what, st["CapEff"], st["CapPrm"])
	}
	if want := h.(*Handle).rec.Launch.Confine.RunAs; want == "" || uids[0]+":"+strings.Fields(st["Gid"])[0] != want {
		t.Errorf("%s: Uid %q Gid %q, recorded runas %q", what, st["Uid"], st["Gid"], want)
	}
}

// TestConfinementRealQEMU boots a guest, checks that its QEMU is confined,
// and that what a confined QEMU must still do works: the agent answers,
// snapshots save (migration to a descriptor, drives handed over and taken
// back) and restore, and the clone is confined too.
func TestConfinementRealQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU (qemu-system); skipped with -short")
	}
	b := &Backend{}
	if err := b.Available(t.Context()); err != nil {
		t.Skipf("needs %s: %v", arches[runtime.GOARCH].Binary, err)
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("needs an x86_64 host: the test boots the host's x86_64 kernel")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("needs qemu-img (qemu-utils) for the qcow2 root overlay")
	}
	if c := ConfinementStatus(t.Context()); c.Sandbox == "" {
		t.Skipf("this QEMU cannot be sandboxed: %q", c.Notes)
	}
	kernel := hostKernel(t)
	dir := t.TempDir()
	initrd := tickInitramfs(t, dir, kernel)
	image := filepath.Join(dir, "cached-root.img")
	if err := writeSparse(image, 8<<20); err != nil {
		t.Fatal(err)
	}
	// Owner-only, as mvmctl keeps them: an unprivileged QEMU could not
	// open any of these by name.
	for _, p := range []string{dir, initrd, image} {
		if err := os.Chmod(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	config := func(name string) string {
		p := filepath.Join(dir, name+"-config.img")
		if err := os.WriteFile(p, bytes.Repeat([]byte(name), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	srcDir := filepath.Join(dir, "src")
	spec := backend.Spec{
		Name: "src", Dir: srcDir, Kernel: kernel, Initrd: initrd, Cmdline: "quiet",
		CPUs: 1, MemoryMiB: 256, RootImage: image, ConfigISO: config("src"),
		SerialLog: filepath.Join(srcDir, "serial.log"),
	}
	src, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Kill(context.Background())
	c := src.(*Handle).rec.Launch.Confine
	if c == nil || c.Sandbox == "" {
		t.Fatalf("launch records confinement %+v", c)
	}
	t.Logf("confinement: %+v", *c)
	checkConfined(t, "source", src)
	if got, _ := echo(t, src, "src", 60*time.Second); got != "echo:src" {
		t.Fatalf("source echo = %q", got)
	}

	snap := filepath.Join(dir, "snaps", "s1")
	if err := src.(backend.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatalf("snapshot of a confined VM: %v", err)
	}
	if st, err := src.State(ctx); err != nil || st != backend.StateRunning {
		t.Fatalf("source after snapshot: %s, %v", st, err)
	}
	if got, _ := echo(t, src, "again", 30*time.Second); got != "echo:again" {
		t.Fatalf("source echo after snapshot = %q", got)
	}
	// And again: the drives were handed back after the first one.
	if err := src.(backend.Snapshotter).Snapshot(ctx, filepath.Join(dir, "snaps", "s1b")); err != nil {
		t.Fatalf("second snapshot of a confined VM: %v", err)
	}
	if err := src.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srcDir, qemuPid)); !os.IsNotExist(err) {
		t.Errorf("pid file of a stopped VM left behind: %v", err)
	}

	cdir := filepath.Join(dir, "a")
	clone, err := b.Restore(ctx, backend.Spec{Name: "a", Dir: cdir, ConfigISO: config("a"), SerialLog: filepath.Join(cdir, "serial.log")}, snap)
	if err != nil {
		t.Fatalf("restore into a confined QEMU: %v", err)
	}
	defer clone.Kill(context.Background())
	checkConfined(t, "clone", clone)
	if got, _ := echo(t, clone, "last?", 30*time.Second); got != "last:src" {
		t.Errorf("clone remembers %q, want the source's \"src\"", got)
	}
	// The clone's drives came up inactive and were activated by the load;
	// saving hands them over once more.
	if err := clone.(backend.Snapshotter).Snapshot(ctx, filepath.Join(dir, "snaps", "s2")); err != nil {
		t.Fatalf("snapshot of a confined clone: %v", err)
	}
	if got, _ := echo(t, clone, "a", 30*time.Second); got != "echo:a" {
		t.Fatalf("clone echo after its snapshot = %q", got)
	}
	// A QEMU that switched user has lost the parent-death signal that
	// kills it with its supervisor; it must die with it all the same.
	p, err := supervisor.ReadPids(cdir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Supervisor.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.VMM.Alive() {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU %d outlived its killed supervisor by 10s", p.VMM.Pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
)

var tickRE = regexp.MustCompile(`(?m)^tick (\d+)\r?$`)

// ticks returns the first and last tick numbers in a serial log (0 if none).
func ticks(path string) (first, last int) {
	b, _ := os.ReadFile(path)
	m := tickRE.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0, 0
	}
	first, _ = strconv.Atoi(string(m[0][1]))
	last, _ = strconv.Atoi(string(m[len(m)-1][1]))
	return first, last
}

// tickInitramfs builds testdata/tickguest as a static /init and packs it with
// the host kernel's virtio modules, which Debian's kernel does not build in.
func tickInitramfs(t *testing.T, dir, kernel string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go toolchain in PATH to build the test guest")
	}
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	modDir := filepath.Join("/lib/modules", release, "kernel/drivers")
	mods := map[string]string{
		"virtio_ring.ko":    filepath.Join(modDir, "virtio/virtio_ring.ko"),
		"virtio.ko":         filepath.Join(modDir, "virtio/virtio.ko"),
		"virtio_mmio.ko":    filepath.Join(modDir, "virtio/virtio_mmio.ko"),
		"virtio_console.ko": filepath.Join(modDir, "char/virtio_console.ko"),
	}
	initBin := filepath.Join(dir, "tickguest")
	build := exec.Command(goBin, "build", "-trimpath", "-o", initBin, "./testdata/tickguest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build test guest: %v\n%s", err, out)
	}
	entries := []cpioFile{
		{Name: "dev", Mode: 0o040755}, {Name: "dev/console", Mode: 0o020600, Major: 5, Minor: 1},
		{Name: "sys", Mode: 0o040755}, {Name: "proc", Mode: 0o040755}, {Name: "modules", Mode: 0o040755},
	}
	e, err := fileEntry("init", initBin, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	entries = append(entries, e)
	for name, src := range mods {
		e, err := fileEntry("modules/"+name, src, 0o644)
		if err != nil {
			t.Skipf("needs the host kernel's virtio modules (uncompressed) in %s: %v", modDir, err)
		}
		entries = append(entries, e)
	}
	path := filepath.Join(dir, "tick.cpio")
	if err := os.WriteFile(path, newcArchive(entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// echo sends msg through the agent relay and returns the guest's answer,
// retrying until the guest serves or d passes.
func echo(t *testing.T, h backend.Handle, msg string, d time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		got, err := func() (string, error) {
			c, err := h.DialAgent(ctx)
			if err != nil {
				return "", err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(12 * time.Second))
			if _, err := io.WriteString(c, msg); err != nil {
				return "", err
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			b, err := io.ReadAll(c)
			return string(b), err
		}()
		cancel()
		if err == nil && got != "" {
			return got, time.Since(start)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no echo from the guest within %v (last error: %v)", d, last)
	return "", 0
}

// TestSnapshotRestoreRealQEMU boots a guest that counts on its console,
// snapshots it, restores two clones and checks that each continues the count
// from the saved point (no reboot), runs, and answers through its own relay.
func TestSnapshotRestoreRealQEMU(t *testing.T) {
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
		t.Log("qemu-img (qemu-utils) missing: exercising the copy fallback")
	}
	kernel := hostKernel(t)
	dir := t.TempDir()
	initrd := tickInitramfs(t, dir, kernel)
	image := filepath.Join(dir, "cached-root.img")
	if err := writeSparse(image, 8<<20); err != nil {
		t.Fatal(err)
	}
	config := func(name string) string {
		p := filepath.Join(dir, name+"-config.img")
		if err := os.WriteFile(p, bytes.Repeat([]byte(name), 4096), 0o644); err != nil {
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
	t0 := time.Now()
	src, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Kill(context.Background())
	waitFor(t, "first tick", 60*time.Second, func() bool { _, l := ticks(spec.SerialLog); return l >= 1 })
	coldBoot := time.Since(t0)
	if got, took := echo(t, src, "src", 30*time.Second); got != "echo:src" {
		t.Fatalf("source echo = %q", got)
	} else {
		t.Logf("source agent answered %v after its first tick", took)
	}
	waitFor(t, "tick 5", 30*time.Second, func() bool { _, l := ticks(spec.SerialLog); return l >= 5 })

	snap := filepath.Join(dir, "snaps", "s1")
	_, before := ticks(spec.SerialLog)
	ts := time.Now()
	if err := src.(backend.Snapshotter).Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	snapTime := time.Since(ts)
	_, after := ticks(spec.SerialLog)
	m, err := ReadManifest(snap)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := src.State(ctx); err != nil || st != backend.StateRunning {
		t.Fatalf("source after snapshot: %s, %v", st, err)
	}
	waitFor(t, "source ticking on", 10*time.Second, func() bool { _, l := ticks(spec.SerialLog); return l > after+2 })
	if got, _ := echo(t, src, "again", 20*time.Second); got != "echo:again" {
		t.Fatalf("source echo after snapshot = %q", got)
	}
	// Spare the CPU for the clones; they must not need the source anyway.
	if err := src.Kill(ctx); err != nil {
		t.Fatal(err)
	}

	// RAM is in the snapshot's own file, not in the stream.
	if m.Memory == "" || !m.MemBackend {
		t.Fatalf("snapshot has no memory file: %+v", m)
	}
	if m.StateBytes > 4<<20 {
		t.Errorf("state stream is %d bytes: RAM was not left out", m.StateBytes)
	}
	memPath := filepath.Join(snap, m.Memory)
	memSum := sha256File(t, memPath)
	var restored []backend.Handle

	for i, name := range []string{"a", "b"} {
		cdir := filepath.Join(dir, name)
		cspec := backend.Spec{
			Name: name, Dir: cdir, ConfigISO: config(name), SerialLog: filepath.Join(cdir, "serial.log"),
			CPUs: 2, // differs from the snapshot: the snapshot's value wins
		}
		tr := time.Now()
		h, err := b.Restore(ctx, cspec, snap)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Kill(context.Background())
		restored = append(restored, h)
		returned := time.Since(tr)
		// Each clone wakes with the source's memory, whatever the clone
		// before it did: the last message the source saw before saving.
		got, _ := echo(t, h, "last?", 30*time.Second)
		agentAt := time.Since(tr)
		if got != "last:src" {
			t.Errorf("clone %s (#%d) remembers %q, want the source's \"src\"", name, i+1, got)
		}
		if got, _ := echo(t, h, name, 30*time.Second); got != "echo:"+name {
			t.Fatalf("clone %s echo = %q", name, got)
		}
		waitFor(t, name+" ticking", 20*time.Second, func() bool { _, l := ticks(cspec.SerialLog); return l > 0 })
		first, _ := ticks(cspec.SerialLog)
		if first <= before {
			t.Errorf("clone %s starts at tick %d, want a continuation after tick %d", name, first, before)
		}
		waitFor(t, name+" ticking on", 20*time.Second, func() bool { _, l := ticks(cspec.SerialLog); return l >= first+5 })
		log, _ := os.ReadFile(cspec.SerialLog)
		if bytes.Contains(log, []byte("tickguest start")) {
			t.Errorf("clone %s rebooted instead of resuming:\n%s", name, log)
		}
		if st, err := h.State(ctx); err != nil || st != backend.StateRunning {
			t.Fatalf("clone %s: %s, %v", name, st, err)
		}
		qh := h.(*Handle)
		if qh.rec.Launch.CPUs != m.CPUs {
			t.Errorf("clone %s runs %d vCPUs, snapshot has %d", name, qh.rec.Launch.CPUs, m.CPUs)
		}
		if qh.rec.Launch.MemPath != memPath || qh.rec.Launch.MemShare {
			t.Errorf("clone %s maps %q share=%v, want the snapshot's file private", name, qh.rec.Launch.MemPath, qh.rec.Launch.MemShare)
		}
		// Its root disk is its own: a copy of the small saved layer, over
		// the cached image.
		root := qh.rec.Launch.Disks[0].Path
		if filepath.Dir(root) != cdir {
			t.Errorf("clone %s root disk %s is not in its own directory", name, root)
		}
		if backing, err := qcow2Backing(root); err == nil && backing != image {
			t.Errorf("clone %s root backing = %q, want %q", name, backing, image)
		}
		t.Logf("clone %s: Restore returned after %v, agent answered after %v, first tick %d",
			name, returned, agentAt, first)
	}
	// Clones diverged privately: a still has its own message.
	if got, _ := echo(t, restored[0], "last?", 30*time.Second); got != "last:a" {
		t.Errorf("clone a remembers %q after b ran, want \"a\"", got)
	}
	if sum := sha256File(t, memPath); sum != memSum {
		t.Errorf("clones wrote the snapshot's memory file (sha256 %s, was %s)", sum, memSum)
	}

	// A clone's RAM is private, so its own snapshot carries RAM in the
	// stream; restoring that gives a VM with a RAM file of its own again.
	snap2 := filepath.Join(dir, "snaps", "s2")
	if err := restored[0].(backend.Snapshotter).Snapshot(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	m2, err := ReadManifest(snap2)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Memory != "" || !m2.MemBackend || m2.StateBytes < 1<<20 {
		t.Fatalf("snapshot of a clone: memory %q, backend %v, state %d bytes; want RAM in the stream", m2.Memory, m2.MemBackend, m2.StateBytes)
	}
	for _, h := range restored {
		h.Kill(ctx)
	}
	cdir := filepath.Join(dir, "c")
	h, err := b.Restore(ctx, backend.Spec{Name: "c", Dir: cdir, ConfigISO: config("c"), SerialLog: filepath.Join(cdir, "serial.log")}, snap2)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill(context.Background())
	if got, _ := echo(t, h, "last?", 30*time.Second); got != "last:a" {
		t.Errorf("clone of clone a remembers %q", got)
	}
	if l := h.(*Handle).rec.Launch; !ownMemFile(l.MemPath, cdir) || !l.MemShare {
		t.Errorf("clone of a clone maps %q share=%v, want its own shared file", l.MemPath, l.MemShare)
	}
	snap3 := filepath.Join(dir, "snaps", "s3")
	if err := h.(backend.Snapshotter).Snapshot(ctx, snap3); err != nil {
		t.Fatal(err)
	}
	if m3, err := ReadManifest(snap3); err != nil || m3.Memory == "" {
		t.Fatalf("snapshot of a VM with its own RAM file again: %+v, %v", m3, err)
	}
	if err := h.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cdir, memFile)); !os.IsNotExist(err) {
		t.Errorf("RAM file of a stopped VM left behind: %v", err)
	}
	t.Logf("cold boot to first tick %v; snapshot %v (state %d KiB, memory file %d MiB allocated); snapshot ticks: before %d, after %d",
		coldBoot, snapTime, m.StateBytes>>10, m.MemoryBytes>>20, before, after)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

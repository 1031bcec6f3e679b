package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// emptyCpio is a newc archive holding only the trailer: the kernel unpacks
// it, finds no /init and no root device, and panics.
func emptyCpio() []byte {
	name := "TRAILER!!!\x00"
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s",
		0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(name), 0, name)
	for b.Len()%512 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func hostKernel(t *testing.T) string {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range m {
		if f, err := os.Open(k); err == nil {
			f.Close()
			return k
		}
	}
	t.Skip("needs a readable host kernel at /boot/vmlinuz-*")
	return ""
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not within %v", what, d)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestSmokeRealQEMU boots the host kernel with an empty initramfs. The guest
// panics (panic=0 keeps it halted), which is enough to check the lifecycle:
// QMP answers, pause/resume, the agent relay socket, Stop and Kill clean up,
// and the serial log has kernel output.
func TestSmokeRealQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU (qemu-system); skipped with -short")
	}
	b := &Backend{}
	if err := b.Available(t.Context()); err != nil {
		t.Skipf("needs %s: %v", arches[runtime.GOARCH].Binary, err)
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("needs an x86_64 host: the smoke test boots the host's x86_64 kernel")
	}
	kernel := hostKernel(t)
	dir := t.TempDir()
	initrd := filepath.Join(dir, "empty.cpio")
	if err := os.WriteFile(initrd, emptyCpio(), 0o644); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "cached-root.img")
	if err := writeSparse(image, 8<<20); err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(dir, "vm")
	spec := backend.Spec{
		Name: "smoke", Dir: vmDir, Kernel: kernel, Initrd: initrd,
		Cmdline: "panic=0", // stay halted after the panic instead of exiting
		CPUs:    1, MemoryMiB: 256, RootImage: image,
		SerialLog: filepath.Join(vmDir, "serial.log"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	start := time.Now()
	h, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start returned after %v", time.Since(start))
	defer h.Kill(context.Background())

	if st, err := h.State(ctx); err != nil || st != backend.StateRunning {
		t.Fatalf("state = %s, %v", st, err)
	}
	serial := func(s string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(spec.SerialLog)
			return bytes.Contains(b, []byte(s))
		}
	}
	waitFor(t, "first kernel line", 30*time.Second, serial("Linux version"))
	t.Logf("first kernel line after %v", time.Since(start))
	waitFor(t, "kernel panic", 60*time.Second, serial("Kernel panic"))
	t.Logf("kernel panic after %v", time.Since(start))

	// Another process would rebuild the handle from the directory.
	h2, err := b.Open(vmDir)
	if err != nil {
		t.Fatal(err)
	}
	p := h2.(backend.Pauser)
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := h2.State(ctx); st != backend.StatePaused {
		t.Fatalf("after pause: %s", st)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := h2.State(ctx); st != backend.StateRunning {
		t.Fatalf("after resume: %s", st)
	}
	// No agent will answer: the relay never announces a session, so a
	// dial ends with an error within its deadline instead of handing out
	// a connection nothing is behind.
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	dialStart := time.Now()
	c, err := h2.DialAgent(dctx)
	dcancel()
	if err == nil {
		c.Close()
		t.Fatal("DialAgent gave a connection with no agent in the guest")
	}
	if d := time.Since(dialStart); d > 5*time.Second {
		t.Fatalf("DialAgent took %v to give up under a 2s deadline: %v", d, err)
	}
	if _, err := os.Stat(filepath.Join(vmDir, "root.qcow2")); err != nil {
		if _, err2 := os.Stat(filepath.Join(vmDir, "root.img")); err2 != nil {
			t.Fatalf("no per-VM root overlay: %v, %v", err, err2)
		}
	}

	pids, _ := supervisor.ReadPids(vmDir)
	stopStart := time.Now()
	if err := h2.Stop(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(stopStart))
	if pids.VMM.Alive() || pids.Supervisor.Alive() {
		t.Fatal("processes survive Stop")
	}
	if st, _ := h2.State(ctx); st != backend.StateStopped {
		t.Fatalf("after stop: %s", st)
	}
	for _, f := range []string{qmpSock, serialSock, consoleSock, supervisor.AgentSock} {
		if _, err := os.Stat(filepath.Join(vmDir, f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	if _, err := supervisor.ReadExit(vmDir); err != nil {
		t.Fatalf("exit not recorded: %v", err)
	}

	// Same directory again, then Kill.
	h3, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pids, _ = supervisor.ReadPids(vmDir)
	if err := h3.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if pids.VMM.Alive() || pids.Supervisor.Alive() {
		t.Fatal("processes survive Kill")
	}
}

// TestStartFailureShowsQEMULog checks that a QEMU that refuses to start is
// reported with its own words.
func TestStartFailureShowsQEMULog(t *testing.T) {
	b := &Backend{}
	if err := b.Available(t.Context()); err != nil {
		t.Skipf("needs %s: %v", arches[runtime.GOARCH].Binary, err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "not-a-kernel")
	os.WriteFile(kernel, []byte("nope"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := b.Start(ctx, backend.Spec{Name: "bad", Dir: filepath.Join(dir, "vm"), Kernel: kernel, CPUs: 1, MemoryMiB: 64})
	if err == nil {
		t.Fatal("Start succeeded with a bogus kernel")
	}
	if !strings.Contains(err.Error(), "qemu.log") {
		t.Fatalf("error lacks the QEMU log: %v", err)
	}
	t.Log(err)
}

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// shimImage is the OCI image TestShim builds and imports.
const shimImage = "docker.io/library/mvm-busybox:test"

// TestShim runs containers in microVMs through containerd-shim-mvm-v1
// under a containerd of the test's own (config, root, state and sockets in
// a temporary directory; the shim found on its PATH, as containerd 1.6
// finds io.containerd.mvm.v1): ctr run prints the container's output and
// passes its exit code through; a detached container is listed, execs into
// its rootfs, is killed and deleted; and nothing (VM, shim, socket, disk)
// is left.
func TestShim(t *testing.T) {
	var missing []string
	if os.Getuid() != 0 {
		missing = append(missing, "root (containerd, mounts)")
	}
	for _, b := range []string{"containerd", "ctr", "qemu-system-x86_64", "busybox", "mkfs.ext4"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b+" on PATH")
		}
	}
	if len(missing) > 0 {
		t.Skipf("TestShim needs %s (scripts/setup.sh installs containerd, qemu, busybox, e2fsprogs)", strings.Join(missing, ", "))
	}
	repo, _ := filepath.Abs("../..")
	bin := filepath.Dir(mvmctl)
	shimBin := filepath.Join(bin, "containerd-shim-mvm-v1")
	build := exec.Command("go", "build", "-o", shimBin, "./cmd/containerd-shim-mvm-v1")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the shim: %v\n%s", err, out)
	}

	// A short directory: containerd's sockets live in it.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Sockets of shims of other containerds (or other tests) are not ours.
	socksBefore := map[string]bool{}
	if socks, _ := filepath.Glob("/run/containerd/s/mvm-*"); socks != nil {
		for _, s := range socks {
			socksBefore[s] = true
		}
	}
	newSockets := func() []string {
		var out []string
		socks, _ := filepath.Glob("/run/containerd/s/mvm-*")
		for _, s := range socks {
			if !socksBefore[s] {
				out = append(out, s)
			}
		}
		return out
	}
	var ctrdLog bytes.Buffer
	ctrd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	// The shim inherits containerd's environment: its PATH finds the
	// shim, the MVM_* variables give it the test's mvm state and cache.
	ctrd.Env = append(append([]string(nil), baseEnv...), "PATH="+bin+":"+os.Getenv("PATH"))
	ctrd.Stdout, ctrd.Stderr = &ctrdLog, &ctrdLog
	ctrd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ctrd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	ctrdDone := make(chan struct{})
	go func() { _ = ctrd.Wait(); close(ctrdDone) }()
	stopped := false
	stopContainerd := func() {
		if stopped {
			return
		}
		stopped = true
		_ = ctrd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ctrdDone:
		case <-time.After(20 * time.Second):
			_ = ctrd.Process.Kill()
			<-ctrdDone
		}
	}
	t.Cleanup(func() {
		stopContainerd()
		// Shims outlive containerd (their own sessions): end those this
		// test's containerd started, should a failure have left any.
		for _, p := range procsRunning(shimBin) {
			pid, _, _ := strings.Cut(p, ":")
			if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() {
				_ = syscall.Kill(n, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			for _, s := range newSockets() { // the killed shims'
				os.Remove(s)
			}
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", tail(ctrdLog.String(), 8000))
			return
		}
		// The shim's own timings (rootfs build, VM boot) for the record.
		for _, l := range strings.Split(ctrdLog.String(), "\n") {
			if strings.Contains(l, "container VM up") {
				t.Log(l)
			}
		}
	})

	ctr := func(timeout time.Duration, args ...string) result {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(c, "ctr", append([]string{"--address", sock, "--namespace", "mvmtest"}, args...)...)
		return runResult(t, c, cmd, timeout)
	}
	mustCtr := func(timeout time.Duration, args ...string) result {
		t.Helper()
		r := ctr(timeout, args...)
		if r.code != 0 {
			t.Fatalf("ctr %v:\n%s", args, r)
		}
		return r
	}
	deadline := time.Now().Add(30 * time.Second)
	for ctr(10*time.Second, "version").code != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s", sock)
		}
		time.Sleep(200 * time.Millisecond)
	}

	ociTar := filepath.Join(dir, "image.tar")
	if err := writeBusyboxOCI(ociTar); err != nil {
		t.Fatalf("build the OCI image: %v", err)
	}
	// The native snapshotter: overlayfs may not stack on this host's /tmp.
	mustCtr(time.Minute, "image", "import", "--snapshotter", "native", ociTar)
	run := []string{"run", "--snapshotter", "native", "--runtime", "io.containerd.mvm.v1"}

	// containerd's event stream shows what the shim published.
	var events bytes.Buffer
	evc, evcancel := context.WithCancel(ctx)
	evcmd := exec.CommandContext(evc, "ctr", "--address", sock, "--namespace", "mvmtest", "events")
	evcmd.Stdout = &events
	if err := evcmd.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := ctr(3*time.Minute, append(run, shimImage, "once", "sh", "-c", "echo hi; cat /etc/mvm-image; exit 3")...)
	t.Logf("ctr run (VM boot, run, exit, delete): %.1fs", time.Since(start).Seconds())
	if r.code != 3 || r.stdout != "hi\nbusybox-oci\n" {
		t.Fatalf("ctr run: want stdout \"hi\\nbusybox-oci\\n\" and exit 3, got\n%s", r)
	}
	mustCtr(time.Minute, "container", "delete", "once")
	time.Sleep(500 * time.Millisecond) // the last events' delivery
	evcancel()
	_ = evcmd.Wait()
	for _, want := range []string{"/tasks/create", "/tasks/start", "/tasks/exit", `"exit_status":3`, "/tasks/delete"} {
		if !strings.Contains(events.String(), want) {
			t.Errorf("ctr events: no %s in\n%s", want, events.String())
		}
	}

	// Five containers at once, each in a VM of its own.
	start = time.Now()
	const parallel = 5
	results := make(chan string, parallel)
	for i := range parallel {
		go func() {
			id := fmt.Sprintf("par%d", i)
			c, cancel := context.WithTimeout(ctx, 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(c, "ctr", append([]string{"--address", sock, "--namespace", "mvmtest"},
				append(run, "--rm", shimImage, id, "sh", "-c", fmt.Sprintf("echo %s; exit %d", id, 10+i))...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 10+i || string(out) != id+"\n" {
				results <- fmt.Sprintf("%s: want output %q and exit %d, got %q (%v)", id, id+"\n", 10+i, out, err)
				return
			}
			results <- ""
		}()
	}
	for range parallel {
		if msg := <-results; msg != "" {
			t.Error(msg)
		}
	}
	t.Logf("%d containers at once: %.1fs", parallel, time.Since(start).Seconds())
	if t.Failed() {
		t.FailNow()
	}

	// A terminal: ctr run -t on a pty of the test's; the container sees a
	// tty of the agent's, of ctr's size (ResizePty), and reads what is typed.
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	tc, tcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer tcancel()
	tty := exec.CommandContext(tc, "ctr", append([]string{"--address", sock, "--namespace", "mvmtest"},
		append(run, "--rm", "-t", shimImage, "tty", "sh", "-c", "tty; read x; echo got:$x; stty size; exit 7")...)...)
	tty.Stdin, tty.Stdout, tty.Stderr = pts, pts, pts
	tty.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := tty.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var screen bytes.Buffer
	lines := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			if n > 0 {
				lines <- string(buf[:n])
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	typed := false
	for chunk := range lines {
		screen.WriteString(chunk)
		if !typed && strings.Contains(screen.String(), "/dev/pts/") {
			typed = true
			if _, err := ptm.Write([]byte("abc\r")); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(screen.String(), "30 100") {
			break
		}
	}
	err = tty.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(screen.String(), "got:abc") || !strings.Contains(screen.String(), "30 100") {
		t.Fatalf("ctr run -t: want /dev/pts/N, got:abc, \"30 100\" and exit 7; got %v, screen:\n%q", err, screen.String())
	}

	// One detached container serves the exec, ls, kill and delete checks.
	start = time.Now()
	mustCtr(3*time.Minute, append(run, "-d", shimImage, "long", "sh", "-c", "echo started > /tmp/started; exec sleep 600")...)
	t.Logf("ctr run -d: %.1fs", time.Since(start).Seconds())
	if r := mustCtr(time.Minute, "task", "ls"); !regexpLine(r.stdout, "long", "RUNNING") {
		t.Fatalf("task ls: want long RUNNING:\n%s", r)
	}
	// The container is an mvm VM: on qemu, without a NIC (so no TAP).
	var vms []struct{ Name, Backend, State, Network string }
	if err := json.Unmarshal([]byte(must(t, time.Minute, "ls", "-a", "--json").stdout), &vms); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range vms {
		if strings.HasPrefix(v.Name, "ctr-") {
			found = true
			if v.Backend != "qemu" || v.State != "running" || v.Network != "" {
				t.Fatalf("container VM %+v: want qemu, running, no network", v)
			}
		}
	}
	if !found {
		t.Fatalf("no ctr- VM in mvmctl ls while the container runs: %+v", vms)
	}
	// The exec runs in the container's rootfs (what the container wrote).
	start = time.Now()
	r = ctr(time.Minute, "task", "exec", "--exec-id", "e1", "long", "sh", "-c", "cat /tmp/started; echo err >&2; exit 5")
	t.Logf("ctr task exec: %.1fs", time.Since(start).Seconds())
	if r.code != 5 || r.stdout != "started\n" || r.stderr != "err\n" {
		t.Fatalf("task exec: want stdout started, stderr err, exit 5; got\n%s", r)
	}
	if r := mustCtr(time.Minute, "task", "ps", "long"); !strings.Contains(r.stdout, "PID") {
		t.Fatalf("task ps:\n%s", r)
	}
	mustCtr(time.Minute, "task", "kill", "--signal", "SIGKILL", "long")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if r := mustCtr(time.Minute, "task", "ls"); regexpLine(r.stdout, "long", "STOPPED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task long not STOPPED after kill:\n%s", mustCtr(time.Minute, "task", "ls"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustCtr(time.Minute, "task", "delete", "long")
	mustCtr(time.Minute, "container", "delete", "long")
	if r := mustCtr(time.Minute, "task", "ls"); strings.Contains(r.stdout, "long") {
		t.Fatalf("task ls after delete:\n%s", r)
	}

	// A shim that dies: containerd runs `shim delete` for the bundle,
	// which removes the VM the shim had booted.
	mustCtr(3*time.Minute, append(run, "-d", shimImage, "crash", "sleep", "600")...)
	shims := procsRunning(shimBin + " -namespace mvmtest -id crash")
	if len(shims) != 1 {
		t.Fatalf("want one shim daemon of crash, got %v", shims)
	}
	pid, _, _ := strings.Cut(shims[0], ":")
	n, _ := strconv.Atoi(pid)
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if r := mustCtr(time.Minute, "task", "ls"); !regexpLine(r.stdout, "crash", "RUNNING") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task crash still RUNNING after its shim died:\n%s", mustCtr(time.Minute, "task", "ls"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = ctr(time.Minute, "task", "delete", "crash") // may be gone already
	mustCtr(time.Minute, "container", "delete", "crash")

	// Nothing left: no VM in mvm's state, no shim process, no socket, no
	// container disk, no QEMU.
	waitGone(t, 20*time.Second, func() string {
		var left []string
		if r := mvm(t, time.Minute, "", "ls", "-a", "--json"); strings.Contains(r.stdout, `"ctr-`) {
			left = append(left, "VMs: "+r.stdout)
		}
		for _, p := range procsRunning(shimBin, "qemu-system") {
			if strings.Contains(p, "containerd-shim-mvm-v1") || strings.Contains(p, filepath.Join(rootDir, "state")) {
				left = append(left, "process: "+p)
			}
		}
		if socks := newSockets(); len(socks) > 0 {
			left = append(left, fmt.Sprintf("sockets: %v", socks))
		}
		if disks, _ := filepath.Glob(filepath.Join(dir, "state", "*", "*", "*", "mvm-rootfs.ext4")); len(disks) > 0 {
			left = append(left, fmt.Sprintf("disks: %v", disks))
		}
		return strings.Join(left, "\n")
	})
}

// regexpLine reports whether a line of out has these fields in order.
func regexpLine(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		i := 0
		for _, w := range f {
			if i < len(fields) && w == fields[i] {
				i++
			}
		}
		if i == len(fields) {
			return true
		}
	}
	return false
}

// waitGone polls check until it reports nothing left.
func waitGone(t *testing.T, d time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := check()
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind:\n%s", left)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// procsRunning lists the command lines of processes whose command line
// contains any of subs.
func procsRunning(subs ...string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cl := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		for _, s := range subs {
			if strings.Contains(cl, s) {
				out = append(out, e.Name()+": "+cl)
				break
			}
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// writeBusyboxOCI writes an OCI image archive (oci-layout, index.json,
// blobs) of one layer: the host's static busybox, its applet links and an
// /etc the container reads, named shimImage.
func writeBusyboxOCI(out string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	bbBytes, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	mtime := time.Unix(946684800, 0)
	dirs := []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "root/"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mtime}); err != nil {
			return err
		}
	}
	file := func(name string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(b)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := file("bin/busybox", 0o755, bbBytes); err != nil {
		return err
	}
	for _, a := range []string{"sh", "echo", "cat", "sleep", "ls", "ps", "id", "tty", "stty"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", ModTime: mtime}); err != nil {
			return err
		}
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n", "etc/mvm-image": "busybox-oci\n",
	} {
		if err := file(name, 0o644, []byte(content)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int) {
		h := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(h[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := add(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest, configSize := add(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := add(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": shimImage, "org.opencontainers.image.ref.name": "test"},
		}},
	})
	var arch bytes.Buffer
	aw := tar.NewWriter(&arch)
	put := func(name string, b []byte) error {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := aw.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	for d, b := range blobs {
		if err := put("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b); err != nil {
			return err
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, arch.Bytes(), 0o644)
}

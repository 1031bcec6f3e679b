package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// The raw-QEMU baseline: the kernel mvm booted, a tiny initramfs of our
// own (static busybox, the probe, virtio-mmio and virtio-net modules, an
// init script that configures eth0 with busybox ip and runs the same
// workload), and QEMU with mvm's machine, CPU, memory, kernel command line
// and netdev, minus mvm's disks, agent channel and file-backed RAM (kept
// with -raw-mem-file, to tell that cost apart).

// guestNet is one guest's eth0 setup and where its sink is.
type guestNet struct {
	CIDR    string // guest address, e.g. 10.250.0.2/24
	Gateway string
	MTU     int
	Sink    string // the sink's address as the guest dials it
}

// workload is what the guest runs, identically under mvm and raw QEMU.
type workload struct {
	Blocks   int    // dd count of 64 KiB blocks
	Runs     int    // rounds: one dd|nc stream and one batch of connects each
	Connects int    // probe connects in all, spread over the rounds
	TSCKHz   string // the probe times with the TSC at this rate ("": the guest's clock)
}

// step is one thing a guest does: a stream (connects == 0) or a batch of
// connects.
type step struct{ connects int }

// plan is the steps in order: per round a stream, then its connects.
func (w workload) plan() []step {
	var out []step
	for r := 0; r < w.Runs; r++ {
		out = append(out, step{})
		if n := w.batch(r); n > 0 {
			out = append(out, step{connects: n})
		}
	}
	return out
}

// batch is round r's share of the connects.
func (w workload) batch(r int) int {
	n := w.Connects / w.Runs
	if r < w.Connects%w.Runs {
		n++
	}
	return n
}

// streamCmd is the shell command of one dd|nc stream to sink.
func (w workload) streamCmd(sink string) string {
	return fmt.Sprintf("dd if=/dev/zero bs=64k count=%d 2>/dev/null | nc -w 10 %s %d", w.Blocks, sink, streamPort)
}

// probeArgs are the probe's arguments for n connects to sink.
func (w workload) probeArgs(sink string, n int) []string {
	args := []string{"-addr", fmt.Sprintf("%s:%d", sink, connectPort), "-n", fmt.Sprint(n)}
	if w.TSCKHz != "" {
		args = append(args, "-tsc-khz", w.TSCKHz)
	}
	return args
}

// tscKHz is the tsc_early_khz mvm put on the guest's command line (under
// TCG: the host's TSC rate, which the guest's TSC runs at), or "". The
// probe times with the TSC at that rate: on a busy host the guest's
// clocksource watchdog may have left the kernel on jiffies (4 ms steps).
func tscKHz(argv []string) string {
	for _, a := range strings.Fields(argValue(argv, "-append")) {
		if v, ok := strings.CutPrefix(a, "tsc_early_khz="); ok {
			return v
		}
	}
	return ""
}

// kernelRelease reads the release string ("6.1.0-57-cloud-amd64") from an
// x86 bzImage's setup header (kernel_version at 0x20e points at it).
func kernelRelease(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%s is not an x86 bzImage (no HdrS); pass -kver", path)
	}
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	buf := make([]byte, 256)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return "", err
	}
	s, _, _ := bytes.Cut(buf, []byte{0})
	fields := strings.Fields(string(s))
	if len(fields) == 0 {
		return "", fmt.Errorf("%s: empty kernel version string", path)
	}
	return fields[0], nil
}

// moduleFile is one module to load, in load order.
type moduleFile struct {
	Name string // base name, e.g. virtio_net.ko
	Data []byte // uncompressed
}

// resolveModules returns want (module names, e.g. "virtio_net") and their
// dependencies from dir's modules.dep, dependencies first. Modules built
// into the kernel (modules.builtin) are skipped.
func resolveModules(dir string, want []string) ([]moduleFile, error) {
	deps, err := readModulesDep(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			builtin[modName(l)] = true
		}
	}
	byName := map[string]string{}
	for path := range deps {
		byName[modName(path)] = path
	}
	var order []string
	seen := map[string]bool{}
	var visit func(path string, depth int) error
	visit = func(path string, depth int) error {
		if seen[path] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("modules.dep: dependency loop at %s", path)
		}
		seen[path] = true
		for _, d := range deps[path] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		order = append(order, path)
		return nil
	}
	for _, w := range want {
		path, ok := byName[strings.ReplaceAll(w, "-", "_")]
		if !ok {
			if builtin[strings.ReplaceAll(w, "-", "_")] {
				continue
			}
			return nil, fmt.Errorf("module %s: not in %s/modules.dep nor built in", w, dir)
		}
		if err := visit(path, 0); err != nil {
			return nil, err
		}
	}
	var out []moduleFile
	for _, p := range order {
		data, err := readModule(filepath.Join(dir, p))
		if err != nil {
			return nil, err
		}
		out = append(out, moduleFile{Name: modName(p) + ".ko", Data: data})
	}
	return out, nil
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// modName is a module path's name: kernel/drivers/net/virtio_net.ko.xz →
// virtio_net (dashes as underscores, as the kernel names them).
func modName(path string) string {
	b := filepath.Base(strings.TrimSpace(path))
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// readModule reads a module file, uncompressing .xz, .zst and .gz: busybox
// insmod takes plain ELF only.
func readModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko"):
		return raw, nil
	case strings.HasSuffix(path, ".xz"):
		r, err = xz.NewReader(bytes.NewReader(raw))
	case strings.HasSuffix(path, ".zst"):
		var d *zstd.Decoder
		d, err = zstd.NewReader(bytes.NewReader(raw))
		if err == nil {
			defer d.Close()
			r = d
		}
	case strings.HasSuffix(path, ".gz"):
		r, err = gzip.NewReader(bytes.NewReader(raw))
	default:
		return nil, fmt.Errorf("module %s: unknown compression", path)
	}
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	return data, nil
}

// rawDone is the serial-console marker of the raw guest's last line.
const rawDone = "NBRAW done"

// initScript is the raw guest's /init: load the modules, configure eth0
// with busybox ip as mvm's agent would (IPv6 off, MTU, address, default
// route), then run the workload's steps, each after the bench lets it
// through the gate, and power off.
func initScript(mods []moduleFile, g guestNet, w workload) string {
	var b strings.Builder
	b.WriteString("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n")
	b.WriteString("mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "insmod /lib/modules/%s || echo 'NBRAW insmod %s failed'\n", m.Name, m.Name)
	}
	b.WriteString("i=0\nwhile [ ! -e /sys/class/net/eth0 ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n")
	b.WriteString("echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null\n")
	fmt.Fprintf(&b, "ip link set lo up\nip link set eth0 mtu %d up\nip addr add %s dev eth0\nip route add default via %s\n", g.MTU, g.CIDR, g.Gateway)
	b.WriteString("echo NBRAW net up\n")
	// The kernel moves from tsc-early to tsc about 1.5 s into boot; let
	// that happen before anything is timed (the probe reports the source).
	b.WriteString("i=0\nwhile [ \"$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\" != tsc ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done\n")
	gate := fmt.Sprintf("/nbprobe -wait %s:%d\n", g.Sink, gatePort)
	for _, st := range w.plan() {
		b.WriteString(gate)
		if st.connects == 0 {
			fmt.Fprintf(&b, "%s\necho \"NBRAW stream rc=$?\"\n", w.streamCmd(g.Sink))
		} else {
			fmt.Fprintf(&b, "/nbprobe %s\n", strings.Join(w.probeArgs(g.Sink, st.connects), " "))
		}
	}
	b.WriteString(gate)
	fmt.Fprintf(&b, "echo '%s'\npoweroff -f\n", rawDone)
	return b.String()
}

// buildInitramfs writes the raw guest's initramfs (an uncompressed newc
// cpio) to path.
func buildInitramfs(path, busybox, probe string, mods []moduleFile, script string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	pr, err := os.ReadFile(probe)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"} {
		c.dir(d)
	}
	c.node("dev/console", 0o020600, 5, 1)
	c.file("bin/busybox", 0o755, bb)
	c.symlink("bin/sh", "busybox")
	c.file("nbprobe", 0o755, pr)
	for _, m := range mods {
		c.file("lib/modules/"+m.Name, 0o644, m.Data)
	}
	c.file("init", 0o755, []byte(script))
	c.trailer()
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// cpioWriter writes the newc ("070701") format the kernel unpacks.
type cpioWriter struct {
	w   *bytes.Buffer
	ino uint32
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte, rmaj, rmin uint32) {
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fmt.Fprintf(c.w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.w.WriteString(name)
	c.w.WriteByte(0)
	c.pad()
	c.w.Write(data)
	c.pad()
}

func (c *cpioWriter) pad() {
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, 0o040755, nil, 0, 0) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, 0o100000|perm, b, 0, 0) }
func (c *cpioWriter) symlink(name, target string)             { c.entry(name, 0o120777, []byte(target), 0, 0) }
func (c *cpioWriter) node(name string, mode, maj, min uint32) {
	c.entry(name, mode, nil, maj, min)
}
func (c *cpioWriter) trailer() { c.entry("TRAILER!!!", 0, nil, 0, 0) }

// rawArgv turns the QEMU argv mvm recorded for a VM into the baseline's:
// same binary, machine, accelerator, CPU, memory, kernel, command line,
// NICs and RNG; our initramfs and a file console instead of mvm's; no
// disks, agent channel, QMP, pid file, confinement (-sandbox, -runas) or
// file-backed RAM (unless memPath is set: then mvm's memory backend is
// kept with that file). netdev
// replaces the -netdev value (nil keeps mvm's). Any option it does not
// know is an error, so a change to mvm's argv cannot slip into the
// baseline unseen.
func rawArgv(mvm []string, initrd, serial string, netdev func(string) string, memPath string) ([]string, error) {
	if len(mvm) < 2 {
		return nil, fmt.Errorf("empty QEMU argv")
	}
	flagOnly := map[string]bool{"-nodefaults": true, "-no-user-config": true, "-no-reboot": true}
	out := []string{mvm[0]}
	for i := 1; i < len(mvm); i++ {
		f := mvm[i]
		if flagOnly[f] {
			out = append(out, f)
			continue
		}
		if i+1 >= len(mvm) {
			return nil, fmt.Errorf("QEMU argv: %s has no value", f)
		}
		v := mvm[i+1]
		i++
		switch f {
		case "-name":
			out = append(out, f, "nbraw")
		case "-M", "-machine":
			var keep []string
			for _, o := range strings.Split(v, ",") {
				if memPath != "" || !strings.HasPrefix(o, "memory-backend=") {
					keep = append(keep, o)
				}
			}
			out = append(out, f, strings.Join(keep, ","))
		case "-accel", "-cpu", "-m", "-smp", "-display", "-kernel", "-append":
			out = append(out, f, v)
		case "-object":
			if !strings.HasPrefix(v, "memory-backend-") {
				return nil, fmt.Errorf("QEMU argv: unexpected -object %s", v)
			}
			if memPath != "" {
				opts := strings.Split(v, ",")
				for i, o := range opts {
					if strings.HasPrefix(o, "mem-path=") {
						opts[i] = "mem-path=" + strings.ReplaceAll(memPath, ",", ",,")
					}
				}
				out = append(out, f, strings.Join(opts, ","))
			}
		case "-initrd":
			out = append(out, f, initrd)
		case "-chardev", "-serial", "-qmp", "-pidfile", "-drive":
		case "-sandbox", "-runas":
			// mvm's confinement of the QEMU process (seccomp, its own
			// uid): what it costs is mvm's, so the baseline runs without.
		case "-device":
			dev, _, _ := strings.Cut(v, ",")
			switch dev {
			case "virtio-blk-device", "virtio-serial-device", "virtserialport", "vhost-vsock-device":
			case "virtio-net-device", "virtio-rng-device":
				out = append(out, f, v)
			default:
				return nil, fmt.Errorf("QEMU argv: unexpected -device %s", v)
			}
		case "-netdev":
			if netdev != nil {
				v = netdev(v)
			}
			out = append(out, f, v)
		default:
			return nil, fmt.Errorf("QEMU argv: unexpected option %s %s", f, v)
		}
	}
	return append(out, "-chardev", "file,id=console,path="+strings.ReplaceAll(serial, ",", ",,"), "-serial", "chardev:console"), nil
}

// withTAP points a tap netdev at our own TAP, keeping every other option.
func withTAP(tap string) func(string) string {
	return func(v string) string {
		opts := strings.Split(v, ",")
		for i, o := range opts {
			if strings.HasPrefix(o, "ifname=") {
				opts[i] = "ifname=" + tap
			}
		}
		return strings.Join(opts, ",")
	}
}

// rawVM is a running baseline guest, driven step by step through the gate.
type rawVM struct {
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	done    chan struct{} // closed when QEMU has exited
	exitErr error         // its Wait error, set before done closes
	serial  string
	sink    *sink
	pending net.Conn // the guest waiting at the gate
	cancel  context.CancelFunc
}

// startRaw runs QEMU inside ns and waits until the guest is at its first
// gate (booted, network up).
func startRaw(ctx context.Context, e *env, argv []string, serial string, s *sink) (*rawVM, error) {
	_ = os.Remove(serial)
	ctx, cancel := context.WithCancel(ctx)
	r := &rawVM{serial: serial, sink: s, done: make(chan struct{}), cancel: cancel}
	r.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.rawNS}, argv...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stderr, &r.stderr
	r.cmd.WaitDelay = 10 * time.Second
	if err := r.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	e.onExit("stop raw QEMU", func() error { r.stop(); return nil })
	go func() { r.exitErr = r.cmd.Wait(); close(r.done) }()
	if err := r.wait(ctx, 5*time.Minute); err != nil {
		return nil, err
	}
	return r, nil
}

// stop kills QEMU if it still runs (teardown, or a failed step).
func (r *rawVM) stop() {
	r.cancel()
	if r.pending != nil {
		r.pending.Close()
		r.pending = nil
	}
}

// wait takes the guest's next gate connection.
func (r *rawVM) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case c := <-r.sink.Gates:
		r.pending = c
		return nil
	case <-r.done:
		return fmt.Errorf("raw QEMU exited (%v) before the gate: %s\nserial log tail:\n%s", r.exitErr, strings.TrimSpace(r.stderr.String()), r.tail())
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("raw guest did not reach its gate within %s; serial log tail:\n%s", timeout, r.tail())
	}
}

// step lets the guest run its next step and waits until it is back at
// the gate (so nothing of it overlaps what the bench measures next).
// A stream step's sink result is returned.
func (r *rawVM) step(ctx context.Context, isStream bool) (stream, error) {
	if r.pending == nil {
		return stream{}, fmt.Errorf("raw guest is not at its gate")
	}
	_, _ = r.pending.Write([]byte("go\n"))
	r.pending.Close()
	r.pending = nil
	var st stream
	if isStream {
		var err error
		if st, err = r.sink.next(ctx, r.done, 10*time.Minute); err != nil {
			return st, fmt.Errorf("raw stream: %w", err)
		}
	}
	return st, r.wait(ctx, 10*time.Minute)
}

// finish releases the guest's last gate, waits for it to power off and
// returns the probe lines from its serial log.
func (r *rawVM) finish(ctx context.Context) ([]byte, error) {
	if r.pending != nil {
		_, _ = r.pending.Write([]byte("go\n"))
		r.pending.Close()
		r.pending = nil
	}
	select {
	case <-r.done:
		if r.exitErr != nil {
			return nil, fmt.Errorf("raw QEMU: %v: %s", r.exitErr, strings.TrimSpace(r.stderr.String()))
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(2 * time.Minute):
		return nil, fmt.Errorf("raw guest did not power off; serial log tail:\n%s", r.tail())
	}
	log, err := os.ReadFile(r.serial)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(log, []byte(rawDone)) {
		return log, fmt.Errorf("raw guest did not finish; serial log tail:\n%s", r.tail())
	}
	for _, l := range strings.Split(string(log), "\n") {
		if rc, ok := strings.CutPrefix(strings.TrimSpace(l), "NBRAW stream rc="); ok && rc != "0" {
			return log, fmt.Errorf("raw guest: dd|nc exited %s; serial log tail:\n%s", rc, r.tail())
		}
	}
	return log, nil
}

func (r *rawVM) tail() string {
	b, _ := os.ReadFile(r.serial)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

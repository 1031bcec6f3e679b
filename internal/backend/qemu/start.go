package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/kvmprobe"
	"github.com/mvm-dev/mvm/internal/qmp"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// startTimeout bounds Start when ctx has no deadline.
const startTimeout = 60 * time.Second

// maxSockPath is the usable length of a unix socket path (sun_path minus NUL).
const maxSockPath = 107

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Handle, error) {
	h, err := b.start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start %s on qemu: %w", spec.Name, err)
	}
	return h, nil
}

func (b *Backend) start(ctx context.Context, spec backend.Spec) (*Handle, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	dir := spec.Dir
	if err := prepareDir(dir); err != nil {
		return nil, err
	}

	garch, err := guestArch(spec)
	if err != nil {
		return nil, err
	}
	foreign := garch != runtime.GOARCH
	if foreign {
		// Fail before any disk is made: the host's QEMU need not emulate it.
		if _, err := binaryFor(garch); err != nil {
			return nil, err
		}
	}
	t := time.Now()
	disks, err := resolveDisks(ctx, spec)
	if err != nil {
		return nil, err
	}
	slog.Debug("qemu start step", "step", "disks", "took", time.Since(t))
	kvm, hvf := acceleration(ctx, garch)
	l := launch{
		Arch: garch, Name: spec.Name, KVM: kvm, HVF: hvf, ACPI: true,
		Kernel: spec.Kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline,
		CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB, Disks: disks,
		SerialLog: spec.SerialLog, ConsoleSock: filepath.Join(dir, consoleSock),
		QMPSock: filepath.Join(dir, qmpSock), PidFile: filepath.Join(dir, qemuPid),
		Transport: guestcfg.TransportSerial, SerialSock: filepath.Join(dir, serialSock),
		// RAM in a file of the VM's own, mapped shared: a snapshot then
		// copies the file instead of streaming RAM through QEMU.
		MemShare: true,
		NICs:     spec.NICs,
	}
	for _, n := range l.NICs {
		if n.User != nil {
			l.Passt, l.Dir = passtBinary(ctx, l.binary()), dir
			break
		}
	}
	if l.MemPath, err = newMemFile(dir); err != nil {
		return nil, err
	}
	if l.CPUs <= 0 {
		l.CPUs = 1
	}
	if l.MemoryMiB <= 0 {
		l.MemoryMiB = 512
	}
	if !kvm && !hvf && !foreign {
		// The host's TSC rate means nothing to an emulated foreign CPU.
		l.TSCKHz = hostTSCKHz()
	}
	l.Confine = confinementFor(ctx, l.binary())
	if !foreign && vsockUsable(ctx) { // vhost-vsock needs KVM
		cid, err := allocateCID()
		if err != nil {
			return nil, err
		}
		l.Transport, l.CID = guestcfg.TransportVsock, cid
	}
	argv, err := buildArgv(l)
	if err != nil {
		return nil, err
	}
	rec := record{Backend: Name, Transport: l.Transport, CID: l.CID, Accel: l.accelName(), Argv: argv, Launch: &l, Publish: proxied(spec)}
	return boot(ctx, dir, rec)
}

// probeAccel reports whether KVM, else hvf, runs guests here; a variable so
// tests can pretend either does.
var probeAccel = func(ctx context.Context) (kvm, hvf bool) {
	if kvm, _ = kvmprobe.Probe(ctx); kvm {
		return true, false
	}
	hvf, _ = kvmprobe.HVF(ctx)
	return false, hvf
}

// acceleration is what a garch guest runs on: KVM and hvf run only the
// host's instruction set, so a foreign guest is always emulated (TCG, which
// buildArgv pairs with -cpu max).
func acceleration(ctx context.Context, garch string) (kvm, hvf bool) {
	if garch != runtime.GOARCH {
		return false, false
	}
	return probeAccel(ctx)
}

// proxied is what the supervisor publishes: ports of TAP-attached guests
// (user-mode NICs forward their own).
func proxied(spec backend.Spec) []backend.Publish {
	for _, n := range spec.NICs {
		if n.TAP != "" {
			return spec.Publish
		}
	}
	return nil
}

// accelName is the accelerator as records and snapshot manifests name it.
func (l launch) accelName() string {
	switch {
	case l.KVM:
		return "kvm"
	case l.HVF:
		return "hvf"
	}
	return "tcg"
}

// prepareDir makes dir ready for a new QEMU: it exists, no VM runs there, and
// no stale sockets are left from a previous run.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if vmRunning(dir) {
		return fmt.Errorf("a VM is already running in %s", dir)
	}
	// A supervisor killed outright leaves the last run's RAM file.
	_ = removeOwnMem(dir)
	for _, f := range []string{qmpSock, serialSock, consoleSock, supervisor.AgentSock, qemuPid, memFile} {
		os.Remove(filepath.Join(dir, f))
	}
	if p := filepath.Join(dir, serialSock); len(p) > maxSockPath {
		return fmt.Errorf("VM directory path too long for unix sockets (%d > %d bytes): %s", len(p), maxSockPath, dir)
	}
	return nil
}

// boot records rec in dir, launches the supervisor with rec.Argv and waits
// until QMP answers. On failure the VM is killed.
func boot(ctx context.Context, dir string, rec record) (*Handle, error) {
	if rec.Transport == guestcfg.TransportSerial {
		rec.RelayReady = true
	}
	if err := writeRecord(dir, rec); err != nil {
		return nil, fmt.Errorf("write %s: %w", stateFile, err)
	}
	cfg := supervisor.Config{
		Argv:      rec.Argv,
		VMMLog:    filepath.Join(dir, qemuLog),
		QMPSocket: filepath.Join(dir, qmpSock),
	}
	if rec.Transport == guestcfg.TransportSerial {
		cfg.SerialSock = filepath.Join(dir, serialSock)
		cfg.AgentSock = filepath.Join(dir, supervisor.AgentSock)
		cfg.AgentReady = true
	}
	if l := rec.Launch; l != nil {
		if l.SerialLog != "" && l.ConsoleSock != "" {
			cfg.ConsoleSock, cfg.ConsoleLog = l.ConsoleSock, l.SerialLog
		}
		cfg.Listen = listenSockets(*l)
	}
	if l := rec.Launch; l != nil {
		for _, n := range l.passtNICs() {
			h, err := passtHelper(l.Passt, dir, n)
			if err != nil {
				return nil, err
			}
			cfg.Helpers = append(cfg.Helpers, h)
		}
	}
	for _, p := range rec.Publish {
		cfg.Publish = append(cfg.Publish, supervisor.Publish{
			Proto:  p.Proto,
			Listen: net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort)),
			Target: net.JoinHostPort(p.GuestIP, strconv.Itoa(p.GuestPort)),
		})
	}
	// Guest RAM is worthless once QEMU exits (a cold start makes a fresh
	// file); only a VM's own file, never a snapshot's it maps private.
	if l := rec.Launch; l != nil && l.MemShare && ownMemFile(l.MemPath, dir) {
		cfg.Remove = append(cfg.Remove, l.MemPath)
	}
	// A QEMU that dropped privileges (-runas) cannot delete its pid file,
	// and has lost the signal that would kill it with the supervisor.
	if l := rec.Launch; l != nil && l.PidFile != "" {
		cfg.Remove = append(cfg.Remove, l.PidFile)
	}
	if l := rec.Launch; l != nil && l.Confine.dropsPrivileges() {
		cfg.VMMGuard = true
	}
	t := time.Now()
	if _, err := supervisor.Launch(ctx, dir, cfg); err != nil {
		return nil, err
	}
	slog.Debug("qemu start step", "step", "supervisor launch", "took", time.Since(t))
	t = time.Now()
	h := &Handle{dir: dir, rec: rec}
	if err := h.waitRunning(ctx); err != nil {
		h.Kill(context.Background())
		return nil, err
	}
	slog.Debug("qemu start step", "step", "QMP answers", "took", time.Since(t))
	return h, nil
}

func checkSpec(s backend.Spec) error {
	if s.Dir == "" || !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("VM directory must be an absolute path, got %q", s.Dir)
	}
	for what, p := range map[string]string{"kernel": s.Kernel, "initrd": s.Initrd, "config drive": s.ConfigISO} {
		if p == "" {
			if what == "kernel" {
				return errors.New("no kernel given")
			}
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// resolveDisks returns the drives to attach: the VM's own overlay of
// RootImage first, then the spec's other disks, then the read-only config
// drive. A spec disk pointing at RootImage is replaced by the overlay, so the
// cached image is never attached.
func resolveDisks(ctx context.Context, spec backend.Spec) ([]backend.Disk, error) {
	var disks []backend.Disk
	if spec.RootImage != "" {
		path, format, err := rootOverlay(ctx, spec.RootImage, spec.Dir)
		if err != nil {
			return nil, err
		}
		disks = append(disks, backend.Disk{ID: "root", Path: path, Format: format})
	}
	for _, d := range spec.Disks {
		if spec.RootImage != "" && (d.Path == spec.RootImage || d.ID == "root") {
			continue
		}
		disks = append(disks, d)
	}
	if spec.ConfigISO != "" {
		disks = append(disks, backend.Disk{ID: "config", Path: spec.ConfigISO, Format: "raw", ReadOnly: true})
	}
	seen := map[string]bool{}
	for i, d := range disks {
		if d.ID == "" {
			disks[i].ID = fmt.Sprintf("disk%d", i)
		}
		if seen[disks[i].ID] {
			return nil, fmt.Errorf("duplicate disk id %q", disks[i].ID)
		}
		seen[disks[i].ID] = true
	}
	return disks, nil
}

// waitRunning returns once QMP answers query-status, or fails with the tail
// of QEMU's log when QEMU or the supervisor exits first.
func (h *Handle) waitRunning(ctx context.Context) error {
	// Polled often: QEMU answers within tens of milliseconds, and a restore
	// waits for nothing else.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	sawSupervisor := false
	for {
		if ex, err := supervisor.ReadExit(h.dir); err == nil {
			return fmt.Errorf("qemu exited during start (code %d%s): %s", ex.Code, sigSuffix(ex), h.logTail())
		}
		if p, err := supervisor.ReadPids(h.dir); err == nil {
			sawSupervisor = true
			if !p.Supervisor.Alive() && !p.VMM.Alive() {
				return fmt.Errorf("supervisor died during start: %s", h.logTail())
			}
			if p.VMM.Pid != 0 {
				if st, err := h.status(ctx); err == nil && st.Status != "" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if !sawSupervisor {
				return fmt.Errorf("supervisor did not start (see %s): %w", filepath.Join(h.dir, supervisor.LogFile), ctx.Err())
			}
			return fmt.Errorf("qemu did not answer QMP: %w: %s", ctx.Err(), h.logTail())
		case <-tick.C:
		}
	}
}

func (h *Handle) status(ctx context.Context) (qmp.Status, error) {
	c, err := qmp.Dial(ctx, filepath.Join(h.dir, qmpSock))
	if err != nil {
		return qmp.Status{}, err
	}
	defer c.Close()
	return c.QueryStatus(ctx)
}

func sigSuffix(ex supervisor.Exit) string {
	if ex.Signal != "" {
		return ", " + ex.Signal
	}
	if ex.Error != "" {
		return ", " + ex.Error
	}
	return ""
}

// logTail returns the last lines of qemu.log for error messages.
func (h *Handle) logTail() string {
	b, err := os.ReadFile(filepath.Join(h.dir, qemuLog))
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "qemu.log is empty"
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "qemu.log: " + strings.Join(lines, " | ")
}

package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/kvmprobe"
	"github.com/mvm-dev/mvm/internal/qmp"
)

var _ backend.Restorer = (*Backend)(nil)

// Restore implements backend.Restorer. It starts a new QEMU with the saved
// machine's exact options plus -incoming defer, loads the state with
// migrate-incoming, and resumes it when the source was running. The machine
// shape comes from the snapshot; spec supplies the clone's identity (Name,
// Dir, SerialLog, ConfigISO). CPUs, MemoryMiB, Kernel, Initrd, Cmdline,
// RootImage and Disks that disagree with the snapshot are ignored with a
// warning: a migration stream loads only into the machine it came from.
func (b *Backend) Restore(ctx context.Context, spec backend.Spec, snapDir string) (backend.Handle, error) {
	h, err := b.restore(ctx, spec, snapDir)
	if err != nil {
		return nil, fmt.Errorf("restore %s from %s on qemu: %w", spec.Name, snapDir, err)
	}
	return h, nil
}

func (b *Backend) restore(ctx context.Context, spec backend.Spec, snapDir string) (*Handle, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	began := time.Now()
	snapDir, err := filepath.Abs(snapDir)
	if err != nil {
		return nil, err
	}
	m, err := ReadManifest(snapDir)
	if err != nil {
		return nil, err
	}
	if spec.Dir == "" || !filepath.IsAbs(spec.Dir) {
		return nil, fmt.Errorf("VM directory must be an absolute path, got %q", spec.Dir)
	}
	for _, w := range RestoreWarnings(m, spec) {
		slog.Warn(w, "vm", spec.Name, "snapshot", snapDir)
	}
	for _, p := range m.Pins() {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("snapshot needs %s: %w", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(snapDir, m.State)); err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	l := m.launchFrom()
	if l.KVM {
		if ok, why := kvmprobe.Probe(ctx); !ok {
			return nil, fmt.Errorf("snapshot was saved under KVM, which is not usable here (%s); a KVM snapshot cannot load under TCG", why)
		}
	}
	if l.HVF {
		if ok, why := kvmprobe.HVF(ctx); !ok {
			return nil, fmt.Errorf("snapshot was saved under hvf, which is not usable here (%s)", why)
		}
	}
	if err := prepareDir(spec.Dir); err != nil {
		return nil, err
	}
	dir := spec.Dir
	l.Name, l.SerialLog = spec.Name, spec.SerialLog
	l.QMPSock, l.PidFile = filepath.Join(dir, qmpSock), filepath.Join(dir, qemuPid)
	l.SerialSock, l.ConsoleSock = filepath.Join(dir, serialSock), filepath.Join(dir, consoleSock)
	if l.Transport == guestcfg.TransportVsock {
		if !vsockUsable(ctx) {
			return nil, fmt.Errorf("snapshot uses vsock, but %s is not usable here", vhostVsock)
		}
		// A new CID: the guest rereads it on the transport reset that
		// follows the load.
		if l.CID, err = allocateCID(); err != nil {
			return nil, err
		}
	}
	if len(spec.NICs) != len(l.NICs) {
		return nil, fmt.Errorf("snapshot has %d network interfaces, the clone would get %d: restore it onto a network (--network) as the source had, or take a snapshot of a VM with the network you want", len(l.NICs), len(spec.NICs))
	}
	// Same devices, the clone's own host side and MAC.
	for i, n := range spec.NICs {
		if n.ID != l.NICs[i].ID {
			return nil, fmt.Errorf("snapshot's network interface %d is %q, the clone's is %q", i, l.NICs[i].ID, n.ID)
		}
	}
	l.NICs = spec.NICs
	l.Passt, l.Dir = "", dir
	for _, n := range l.NICs {
		if n.User != nil {
			l.Passt = passtBinary(ctx, l.binary())
			break
		}
	}
	if l.MemPath, l.MemShare, err = restoreMemory(m, snapDir, dir); err != nil {
		return nil, err
	}
	if l.Disks, err = restoreDisks(ctx, m, snapDir, spec); err != nil {
		return nil, err
	}
	// The clone's QEMU is confined as this host confines one now, whatever
	// the source's was: confinement is no part of the machine.
	l.Confine = confinementFor(ctx, l.binary())
	argv, err := buildArgv(l)
	if err != nil {
		return nil, err
	}
	if err := sameMachine(withoutConfinement(m.SourceArgv), withoutConfinement(argv)); err != nil {
		return nil, fmt.Errorf("this mvmctl would not rebuild the saved machine: %w", err)
	}
	argv = append(argv, "-incoming", "defer")
	rec := record{Backend: Name, Transport: l.Transport, CID: l.CID, Accel: m.Accel, Argv: argv, Launch: &l, Snapshot: snapDir, Publish: proxied(spec)}
	prepared := time.Now()
	h, err := boot(ctx, dir, rec)
	if err != nil {
		return nil, err
	}
	booted := time.Now()
	if err := h.loadState(ctx, m, filepath.Join(snapDir, m.State)); err != nil {
		h.Kill(context.WithoutCancel(ctx))
		return nil, err
	}
	slog.Debug("restored", "vm", spec.Name, "prepare", prepared.Sub(began), "qemu_up", booted.Sub(prepared),
		"load", time.Since(booted), "state_bytes", m.StateBytes, "memory_file", m.Memory != "")
	return h, nil
}

// restoreMemory decides where a clone's RAM lives. A snapshot with a RAM
// file is mapped private (copy-on-write: clones share its pages until they
// write them and never change it); one whose stream holds RAM loads into a
// fresh shared file of the clone's own when the source had a RAM backend,
// and into anonymous RAM, as before RAM files existed, when it had none.
func restoreMemory(m Manifest, snapDir, dir string) (path string, share bool, err error) {
	switch {
	case m.Memory != "":
		path = filepath.Join(snapDir, m.Memory)
		fi, err := os.Stat(path)
		if err != nil {
			return "", false, fmt.Errorf("snapshot memory: %w", err)
		}
		if want := int64(m.MemoryMiB) << 20; fi.Size() != want {
			return "", false, fmt.Errorf("snapshot memory %s has %d bytes, want %d (%d MiB)", path, fi.Size(), want, m.MemoryMiB)
		}
		return path, false, nil
	case m.MemBackend:
		p, err := newMemFile(dir)
		return p, true, err
	}
	return "", false, nil
}

// RestoreWarnings lists what Restore will take from the snapshot rather
// than from spec, for the caller to show.
func RestoreWarnings(m Manifest, spec backend.Spec) []string {
	var w []string
	if spec.CPUs > 0 && spec.CPUs != m.CPUs {
		w = append(w, fmt.Sprintf("snapshot has %d vCPUs; ignoring the requested %d", m.CPUs, spec.CPUs))
	}
	if spec.MemoryMiB > 0 && spec.MemoryMiB != m.MemoryMiB {
		w = append(w, fmt.Sprintf("snapshot has %d MiB of memory; ignoring the requested %d MiB", m.MemoryMiB, spec.MemoryMiB))
	}
	if spec.Kernel != "" && spec.Kernel != m.Kernel {
		w = append(w, "snapshot keeps its own kernel "+m.Kernel+"; ignoring "+spec.Kernel)
	}
	if spec.Initrd != "" && spec.Initrd != m.Initrd {
		w = append(w, "snapshot keeps its own initrd "+m.Initrd+"; ignoring "+spec.Initrd)
	}
	if spec.Cmdline != "" && spec.Cmdline != m.Cmdline {
		w = append(w, "the kernel command line cannot change after boot; ignoring "+spec.Cmdline)
	}
	if spec.RootImage != "" || len(spec.Disks) > 0 {
		w = append(w, "a restored VM uses the snapshot's disks; ignoring the requested ones")
	}
	hasConfig := false
	for _, d := range m.Disks {
		hasConfig = hasConfig || d.ID == configDiskID
	}
	if spec.ConfigISO != "" && !hasConfig {
		w = append(w, "snapshot has no config drive slot; ignoring "+spec.ConfigISO)
	}
	return w
}

// restoreDisks lays out the clone's drives in the snapshot's order: its own
// overlay over each saved disk, read-only disks as they were, and the
// clone's own config drive in the config drive's slot.
func restoreDisks(ctx context.Context, m Manifest, snapDir string, spec backend.Spec) ([]backend.Disk, error) {
	var disks []backend.Disk
	for _, d := range m.Disks {
		nd := backend.Disk{ID: d.ID, Format: d.Format, ReadOnly: d.ReadOnly}
		switch {
		case d.ID == configDiskID:
			if spec.ConfigISO == "" {
				return nil, errors.New("the snapshot has a config drive, so the restored VM needs its own (spec.ConfigISO)")
			}
			if _, err := os.Stat(spec.ConfigISO); err != nil {
				return nil, fmt.Errorf("config drive: %w", err)
			}
			nd.Path = spec.ConfigISO
		case d.File != "":
			path, format, err := cloneDisk(ctx, filepath.Join(snapDir, d.File), d.Format, spec.Dir, d.ID)
			if err != nil {
				return nil, fmt.Errorf("disk %s: %w", d.ID, err)
			}
			nd.Path, nd.Format = path, format
		default:
			nd.Path = d.Path
		}
		disks = append(disks, nd)
	}
	return disks, nil
}

// copyDiskLimit is the largest saved disk a clone copies rather than
// layering an overlay on: a copy of a few MiB takes a millisecond, while
// qemu-img takes tens of them.
const copyDiskLimit = 32 << 20

// cloneDisk gives a clone its own writable disk over a saved one: a copy
// when the saved layer is small (it is usually a qcow2 overlay holding just
// what the source wrote, over the cached rootfs), else a qcow2 overlay when
// qemu-img is installed (instant, and clones never share a writable file),
// else a reflink-or-sparse copy. The format of a drive is not part of the
// migration stream, so the clone's may differ.
func cloneDisk(ctx context.Context, saved, format, dir, id string) (path, newFormat string, err error) {
	fi, err := os.Stat(saved)
	if err != nil {
		return "", "", err
	}
	if fi.Size() <= copyDiskLimit {
		path = filepath.Join(dir, fileSafe(id)+"."+format)
		if err := copyFile(saved, path); err != nil {
			return "", "", err
		}
		return path, format, nil
	}
	if qimg, lerr := exec.LookPath("qemu-img"); lerr == nil {
		path = filepath.Join(dir, fileSafe(id)+".qcow2")
		os.Remove(path)
		out, err := exec.CommandContext(ctx, qimg, "create", "-q", "-f", "qcow2", "-F", format, "-b", saved, path).CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return path, "qcow2", nil
	}
	slog.Debug("qemu-img not found (install qemu-utils); copying the saved disk instead of an overlay", "disk", saved)
	path = filepath.Join(dir, fileSafe(id)+"."+format)
	os.Remove(path)
	if err := copySparse(ctx, saved, path); err != nil {
		return "", "", err
	}
	return path, format, os.Chmod(path, 0o600)
}

// loadState feeds the saved stream into the QEMU waiting in -incoming defer
// and resumes the guest if it was running when saved.
func (h *Handle) loadState(ctx context.Context, m Manifest, statePath string) error {
	c, err := qmp.Dial(ctx, filepath.Join(h.dir, qmpSock))
	if err != nil {
		return err
	}
	defer c.Close()
	if v := c.Greeting().Version.String(); v != m.QEMUVersion {
		return fmt.Errorf("snapshot was saved by QEMU %s but this is QEMU %s; a state file loads only into the same version", m.QEMUVersion, v)
	}
	if p := c.Greeting().Version.Package; p != m.QEMUPackage {
		slog.Warn("QEMU package differs from the snapshot's", "snapshot", m.QEMUPackage, "now", p)
	}
	// The destination sets the capabilities the source used: with
	// x-ignore-shared the stream carries no RAM pages, and the clone's RAM
	// is what the private mapping of the snapshot's file shows.
	for _, name := range m.caps() {
		if err := c.SetMigrationCapability(ctx, name, true); err != nil {
			return err
		}
	}
	f, err := os.Open(statePath)
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	defer f.Close()
	if err := c.SendFD(ctx, stateFD, f); err != nil {
		return err
	}
	if err := c.MigrateIncoming(ctx, qmp.FdURI(stateFD)); err != nil {
		return err
	}
	if _, err := c.WaitMigration(ctx, migratePoll); err != nil {
		return fmt.Errorf("load state: %w: %s", err, h.logTail())
	}
	st, err := c.QueryStatus(ctx)
	if err != nil {
		return err
	}
	// The source was stopped before saving, so the clone arrives paused.
	if m.WasRunning && st.Status != "running" {
		if err := c.Cont(ctx); err != nil {
			return err
		}
		if st, err = c.QueryStatus(ctx); err != nil {
			return err
		}
		if st.Status != "running" {
			return fmt.Errorf("VM is %s after cont", st.Status)
		}
	}
	return nil
}

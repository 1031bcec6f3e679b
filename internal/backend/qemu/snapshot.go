package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/qmp"
)

var _ backend.Snapshotter = (*Handle)(nil)

const (
	// snapshotTimeout bounds Snapshot when ctx has no deadline.
	snapshotTimeout = 5 * time.Minute
	// maxBandwidth lifts QEMU's migration rate cap (32-128 MiB/s by
	// default), which would otherwise throttle writing the state file.
	maxBandwidth = 1 << 40
	// migratePoll is how often query-migrate is asked; a device-state
	// stream saves and loads in milliseconds, so coarser polling would
	// dominate.
	migratePoll = 5 * time.Millisecond
	// stateFD names the state file descriptor handed to QEMU for fd: migration.
	stateFD = "mvm-state"
)

// Snapshot implements backend.Snapshotter. The VM is paused (QMP stop) so
// RAM, devices and disks are one consistent point in time; its state is
// streamed into dst/state, its writable disks are copied while it stays
// paused, and it is resumed if it was running, also when saving fails.
func (h *Handle) Snapshot(ctx context.Context, dst string) error {
	if err := h.snapshot(ctx, dst); err != nil {
		return fmt.Errorf("snapshot %s: %w", h.dir, err)
	}
	return nil
}

func (h *Handle) snapshot(ctx context.Context, dst string) (err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, snapshotTimeout)
		defer cancel()
	}
	l := h.rec.Launch
	if l == nil {
		return errors.New("the VM was started by an mvmctl without snapshot support; restart it first")
	}
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("snapshot directory must be an absolute path, got %q", dst)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()

	c, err := qmp.Dial(ctx, filepath.Join(h.dir, qmpSock))
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.QueryStatus(ctx)
	if err != nil {
		return err
	}
	wasRunning := st.Status == "running"
	if !wasRunning && st.Status != "paused" {
		return fmt.Errorf("VM is %s; only a running or paused VM can be saved", st.Status)
	}
	began := time.Now()
	if wasRunning {
		if err := c.Stop(ctx); err != nil {
			return err
		}
		defer func() {
			// QEMU serves one QMP client at a time: let go of ours first.
			// A fresh context too: the old one may be what failed.
			c.Close()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := h.Resume(rctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume after snapshot: %w", rerr))
			}
		}()
	}

	// A VM with its RAM in a shared file has the stream skip RAM
	// (x-ignore-shared) and the file copied instead: the stream shrinks to
	// device state, and clones map the copy instead of loading it.
	ramFile := l.MemPath != "" && l.MemShare
	caps := []string{capEvents}
	if ramFile {
		caps = append(caps, capIgnoreShared)
	}
	m := Manifest{
		Version: manifestVersion, Backend: Name, Source: l.Name, Created: time.Now().UTC(),
		QEMUVersion: c.Greeting().Version.String(), QEMUPackage: c.Greeting().Version.Package,
		WasRunning: wasRunning,
		Arch:       l.Arch, Binary: l.Binary, Accel: l.accelName(), ACPI: l.ACPI, TSCKHz: l.TSCKHz,
		Kernel: l.Kernel, Initrd: l.Initrd, Cmdline: l.Cmdline,
		CPUs: l.CPUs, MemoryMiB: l.MemoryMiB, Transport: l.Transport,
		State: stateName, SourceArgv: h.rec.Argv,
		MemBackend: l.MemPath != "", Capabilities: caps,
	}
	for _, n := range l.NICs {
		m.NICs = append(m.NICs, n.ID)
	}
	if m.StateBytes, err = saveState(ctx, c, filepath.Join(dst, stateName), caps); err != nil {
		return err
	}
	saved := time.Now()
	// RAM, devices and disks cannot change now: the vCPUs are stopped and,
	// once the migration completed, QEMU has flushed and released its images.
	if ramFile {
		m.Memory = memName
		if m.MemoryBytes, err = snapshotMemory(ctx, l.MemPath, filepath.Join(dst, memName), int64(l.MemoryMiB)<<20); err != nil {
			return err
		}
	}
	memSaved := time.Now()
	for _, d := range l.Disks {
		sd, err := snapshotDisk(ctx, d, dst)
		if err != nil {
			return err
		}
		m.Disks = append(m.Disks, sd)
	}
	if err := writeManifest(dst, m); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	slog.Debug("snapshot saved", "vm", l.Name, "dst", dst, "state_bytes", m.StateBytes,
		"memory_bytes", m.MemoryBytes, "state_time", saved.Sub(began),
		"memory_time", memSaved.Sub(saved), "total_paused", time.Since(began))
	return nil
}

// saveState streams the paused VM's state into path, with the migration
// capabilities caps on, and returns its size.
func saveState(ctx context.Context, c *qmp.Client, path string, caps []string) (int64, error) {
	// Every capability we know is set either way: a clone's QEMU still has
	// the ones its incoming migration turned on.
	for _, name := range sortedCaps() {
		if err := c.SetMigrationCapability(ctx, name, slices.Contains(caps, name)); err != nil {
			return 0, err
		}
	}
	if err := c.SetMigrationMaxBandwidth(ctx, maxBandwidth); err != nil {
		return 0, err
	}
	// QEMU 7.2 has no file: URI; it writes to a descriptor we hand it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	defer f.Close()
	if err := c.SendFD(ctx, stateFD, f); err != nil {
		return 0, err
	}
	if err := c.Migrate(ctx, qmp.FdURI(stateFD)); err != nil {
		return 0, err
	}
	if _, err := c.WaitMigration(ctx, migratePoll); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			c.Execute(cctx, "migrate_cancel", nil, nil)
			cancel()
		}
		return 0, fmt.Errorf("save state: %w", err)
	}
	if err := syncFile(path); err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	if fi.Size() == 0 {
		return 0, errors.New("save state: QEMU wrote an empty state file")
	}
	return fi.Size(), nil
}

// snapshotMemory copies the paused guest's RAM file to dst, keeping holes
// (pages the guest never touched), and returns the bytes allocated. The copy
// is what clones map; it is never written again.
func snapshotMemory(ctx context.Context, src, dst string, size int64) (int64, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return 0, fmt.Errorf("guest memory: %w", err)
	}
	if fi.Size() != size {
		return 0, fmt.Errorf("guest memory file %s has %d bytes, want %d", src, fi.Size(), size)
	}
	if err := copySparse(ctx, src, dst); err != nil {
		return 0, fmt.Errorf("guest memory: %w", err)
	}
	// Owner-only: guest RAM holds the guest's secrets. Not read-only:
	// QEMU 7.2 opens a RAM file read-write even to map it private.
	if err := os.Chmod(dst, 0o600); err != nil {
		return 0, fmt.Errorf("guest memory: %w", err)
	}
	if err := syncFile(dst); err != nil {
		return 0, fmt.Errorf("guest memory: %w", err)
	}
	return allocated(dst)
}

// snapshotDisk records one drive. Writable drives are copied into dst (a
// qcow2 overlay keeps its absolute backing reference to the cached rootfs,
// which the manifest pins); read-only ones are referenced where they are;
// the config drive is replaced by each clone's own.
func snapshotDisk(ctx context.Context, d backend.Disk, dst string) (SnapshotDisk, error) {
	sd := SnapshotDisk{ID: d.ID, Format: d.Format, ReadOnly: d.ReadOnly}
	if sd.Format == "" {
		sd.Format = "raw"
	}
	switch {
	case d.ID == configDiskID:
		return sd, nil
	case d.ReadOnly:
		abs, err := filepath.Abs(d.Path)
		if err != nil {
			return sd, err
		}
		sd.Path = abs
		return sd, nil
	}
	if sd.Format == "qcow2" {
		backing, err := qcow2Backing(d.Path)
		if err != nil {
			return sd, fmt.Errorf("disk %s: %w", d.ID, err)
		}
		if backing != "" && !filepath.IsAbs(backing) {
			return sd, fmt.Errorf("disk %s: relative backing file %q would not resolve from the snapshot", d.ID, backing)
		}
		sd.Backing = backing
	}
	sd.File = "disk-" + fileSafe(d.ID) + "." + sd.Format
	path := filepath.Join(dst, sd.File)
	if err := copySparse(ctx, d.Path, path); err != nil {
		return sd, fmt.Errorf("disk %s: %w", d.ID, err)
	}
	if err := syncFile(path); err != nil {
		return sd, fmt.Errorf("disk %s: %w", d.ID, err)
	}
	// Clones read it as a backing file; nothing may write it again.
	if err := os.Chmod(path, 0o400); err != nil {
		return sd, err
	}
	return sd, nil
}

// fileSafe maps a disk id to something usable in a file name.
func fileSafe(id string) string {
	b := []byte(id)
	for i, c := range b {
		ok := c == '-' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

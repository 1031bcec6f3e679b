package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/firecracker/api"
	"github.com/mvm-dev/mvm/internal/store"
)

var (
	_ backend.Snapshotter = (*Handle)(nil)
	_ backend.Restorer    = (*Backend)(nil)
)

// Files of a snapshot directory.
const (
	snapState    = "vmstate"
	snapMem      = "mem"
	snapManifest = "firecracker-snapshot.json"
)

// snapshotTimeout bounds Snapshot and Restore when ctx has no deadline.
const snapshotTimeout = 5 * time.Minute

// manifest describes a snapshot directory: Firecracker's state and memory
// files, and the VM's writable disks, which Firecracker leaves to us.
type manifest struct {
	Backend string `json:"backend"`
	// Version is the Firecracker that saved it; a load needs the same
	// minor release (each reads one snapshot format).
	Version   string         `json:"version"`
	Disks     []backend.Disk `json:"disks"` // Path relative to the VM dir, as the state names them
	NICs      []string       `json:"nics,omitempty"`
	AgentPort uint32         `json:"agent_port"`
	// CPUs and MemoryMiB are the saved machine's (the jail's cgroup limits).
	CPUs      int `json:"cpus"`
	MemoryMiB int `json:"memory_mib"`
}

// Snapshot implements backend.Snapshotter: pause, PUT /snapshot/create
// (full), copy the writable disks while paused, resume if it was running —
// also when saving fails.
func (h *Handle) Snapshot(ctx context.Context, dst string) (err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, snapshotTimeout)
		defer cancel()
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
			err = fmt.Errorf("snapshot %s: %w", h.dir, err)
		}
	}()
	c := h.client()
	info, err := c.Instance(ctx)
	if err != nil {
		return err
	}
	if info.State != api.StateRunning && info.State != api.StatePaused {
		return fmt.Errorf("VM is %q; only a running or paused VM can be saved", info.State)
	}
	if info.State == api.StateRunning {
		if err := c.Pause(ctx); err != nil {
			return err
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if rerr := c.Resume(rctx); rerr != nil && err == nil {
				err = fmt.Errorf("resume after snapshot: %w", rerr)
			}
		}()
	}
	// Written where Firecracker can (inside its jail), then moved.
	root := h.rec.sock(h.dir, "")
	for _, f := range []string{snapState, snapMem} {
		os.Remove(filepath.Join(root, f))
	}
	if err := c.CreateSnapshot(ctx, api.SnapshotCreate{
		SnapshotType: api.SnapshotFull, SnapshotPath: snapState, MemFilePath: snapMem,
	}); err != nil {
		return err
	}
	for _, f := range []string{snapState, snapMem} {
		if err := moveFile(ctx, filepath.Join(root, f), filepath.Join(dst, f)); err != nil {
			return err
		}
	}
	m := manifest{Backend: Name, Version: h.rec.Version, AgentPort: h.rec.AgentPort, CPUs: h.rec.CPUs, MemoryMiB: h.rec.MemoryMiB}
	for _, d := range h.rec.Disks {
		name := h.rec.DriveNames[d.ID]
		if name == "" {
			name = inDir(h.dir, d.Path) // records before jails
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("disk %s lies outside the VM directory (%s); it cannot move with a snapshot", d.ID, d.Path)
		}
		m.Disks = append(m.Disks, backend.Disk{ID: d.ID, Path: name, Format: d.Format, ReadOnly: d.ReadOnly})
		if d.ReadOnly {
			continue // the config drive: a clone gets its own
		}
		if err := copySparse(ctx, d.Path, filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	m.NICs = h.rec.NICs
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(filepath.Join(dst, snapManifest), append(b, '\n'), 0o600)
}

// copySparse copies src (a file, or a directory: the stand-in VMM keeps
// guest memory in one) to dst, sharing blocks where the filesystem can.
func copySparse(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "-R", "--reflink=auto", "--sparse=always", "--no-preserve=all", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	if st, err := os.Stat(dst); err == nil && st.Mode().IsRegular() {
		return os.Chmod(dst, 0o600)
	}
	return nil
}

func readManifest(dir string) (manifest, error) {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, snapManifest))
	if err != nil {
		return m, fmt.Errorf("not a firecracker snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Backend != Name {
		return m, fmt.Errorf("%s: not a firecracker snapshot manifest", snapManifest)
	}
	for _, d := range m.Disks {
		if !filepath.IsLocal(d.Path) {
			return m, fmt.Errorf("%s: disk path %q leaves the VM directory", snapManifest, d.Path)
		}
	}
	return m, nil
}

// Restore implements backend.Restorer: a fresh Firecracker in spec.Dir
// with its own copies of the snapshot's disks (the state names them by
// relative path), loaded with the clone's TAPs (network_overrides) and its
// own vsock socket, and resumed. A failed load ends that process; nothing
// is retried in it.
func (b *Backend) Restore(ctx context.Context, spec backend.Spec, snapDir string) (backend.Handle, error) {
	h, err := b.restore(ctx, spec, snapDir)
	if err != nil {
		return nil, fmt.Errorf("restore %s from %s on firecracker: %w", spec.Name, snapDir, err)
	}
	return h, nil
}

func (b *Backend) restore(ctx context.Context, spec backend.Spec, snapDir string) (*Handle, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, snapshotTimeout)
		defer cancel()
	}
	snapDir, err := filepath.Abs(snapDir)
	if err != nil {
		return nil, err
	}
	m, err := readManifest(snapDir)
	if err != nil {
		return nil, err
	}
	if spec.Dir == "" || !filepath.IsAbs(spec.Dir) {
		return nil, fmt.Errorf("VM directory must be an absolute path, got %q", spec.Dir)
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(spec.Dir); err != nil {
		return nil, err
	}
	var disks []backend.Disk
	for _, d := range m.Disks {
		dst := filepath.Join(spec.Dir, d.Path)
		switch {
		case !d.ReadOnly:
			os.Remove(dst)
			if err := copySparse(ctx, filepath.Join(snapDir, d.Path), dst); err != nil {
				return nil, err
			}
		case spec.ConfigISO != "" && filepath.Clean(spec.ConfigISO) != dst:
			// The state opens the read-only drive by its old name.
			if err := linkOrCopy(ctx, spec.ConfigISO, dst); err != nil {
				return nil, err
			}
		}
		if _, err := os.Stat(dst); err != nil {
			return nil, fmt.Errorf("snapshot drive %s: %w", d.ID, err)
		}
		disks = append(disks, backend.Disk{ID: d.ID, Path: dst, Format: d.Format, ReadOnly: d.ReadOnly})
	}
	var overrides []api.NetworkOverride
	for i, n := range spec.NICs {
		if n.TAP == "" {
			return nil, fmt.Errorf("NIC %s: Firecracker attaches TAP devices only", n.ID)
		}
		id := n.ID
		if i < len(m.NICs) {
			id = m.NICs[i]
		}
		overrides = append(overrides, api.NetworkOverride{IfaceID: id, HostDevName: n.TAP})
	}
	_, standIn, err := versionOf(ctx, bin)
	if err != nil {
		return nil, err
	}
	rec := record{
		Backend: Name, Binary: bin, Disks: disks, AgentPort: m.AgentPort, Snapshot: snapDir, NICs: m.NICs, StandIn: standIn,
		DriveNames: map[string]string{},
	}
	if rec.AgentPort == 0 {
		return nil, errors.New("snapshot manifest names no agent port")
	}
	cpus, memMiB := shape(backend.Spec{CPUs: m.CPUs, MemoryMiB: m.MemoryMiB})
	rec.CPUs, rec.MemoryMiB = m.CPUs, m.MemoryMiB
	if err := rec.layout(spec.Dir, bin, spec.Name, cpus, memMiB); err != nil {
		return nil, err
	}
	for i, d := range m.Disks {
		rec.DriveNames[d.ID] = d.Path
		if rec.Jail != nil {
			if err := rec.Jail.put(ctx, disks[i].Path, d.Path, true); err != nil {
				return nil, err
			}
		}
	}
	f := files{}
	if f.serial, err = rec.exposeSerial(ctx, spec.Dir, spec.SerialLog); err != nil {
		return nil, err
	}
	state, mem := filepath.Join(snapDir, snapState), filepath.Join(snapDir, snapMem)
	if rec.Jail != nil {
		// Each clone's jail user gets its own copy (reflinked where the
		// filesystem can): a hard link would hand the snapshot's files
		// to one clone's uid.
		for _, n := range []string{snapState, snapMem} {
			if err := rec.Jail.put(ctx, filepath.Join(snapDir, n), n, false); err != nil {
				return nil, err
			}
		}
		state, mem = snapState, snapMem
	}
	if err := writeRecord(spec.Dir, rec); err != nil {
		return nil, err
	}
	if err := launch(ctx, spec.Dir, rec, spec); err != nil {
		return nil, err
	}
	h := &Handle{dir: spec.Dir, rec: rec}
	if err := h.load(ctx, f, state, mem, m, overrides); err != nil {
		h.Kill(context.Background())
		return nil, err
	}
	return h, nil
}

func (h *Handle) load(ctx context.Context, f files, state, mem string, m manifest, overrides []api.NetworkOverride) error {
	c := h.client()
	if err := c.WaitReady(ctx, h.exited(ctx)); err != nil {
		return fmt.Errorf("%w: %s", err, h.logTail())
	}
	v, err := c.CheckVersion(ctx)
	if err != nil {
		return err
	}
	saved, err := api.ParseVersion(m.Version)
	if err != nil {
		return fmt.Errorf("snapshot manifest: %w", err)
	}
	if saved.Major != v.Major || saved.Minor != v.Minor {
		return fmt.Errorf("snapshot was saved by Firecracker %s; this is %s, which cannot load it (snapshots load in the same minor release)", saved, v)
	}
	h.rec.Version = v.String()
	if err := writeRecord(h.dir, h.rec); err != nil {
		return err
	}
	// Serial output is not part of the state; configure it before the load.
	if f.serial != "" {
		if err := c.PutSerial(ctx, api.Serial{SerialOutPath: f.serial}); err != nil {
			return err
		}
	}
	load := api.SnapshotLoad{
		SnapshotPath:     state,
		MemBackend:       &api.MemBackend{BackendType: "File", BackendPath: mem},
		NetworkOverrides: overrides,
		ResumeVM:         true,
	}
	if !v.Less(api.VsockOverrideVersion) {
		load.VsockOverride = &api.VsockOverride{UDSPath: vsockSock}
	}
	if err := c.LoadSnapshot(ctx, load); err != nil {
		return fmt.Errorf("%w: %s", err, h.logTail())
	}
	return nil
}

// linkOrCopy puts src at dst: a hard link when both are on one
// filesystem, else a copy.
func linkOrCopy(ctx context.Context, src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copySparse(ctx, src, dst)
}

// moveFile renames src to dst, copying across filesystems.
func moveFile(ctx context.Context, src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	if err := copySparse(ctx, src, dst); err != nil {
		return err
	}
	return os.Remove(src)
}

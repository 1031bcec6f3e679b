package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// snapMetaFile is our record inside a snapshot directory; the backend owns
// the rest. It is written last, so a directory without it is incomplete.
const snapMetaFile = "mvm-snapshot.json"

// Snapshot is the metadata of one saved VM.
type Snapshot struct {
	Name        string      `json:"name"`
	Source      string      `json:"source"` // VM it was taken from
	Backend     string      `json:"backend"`
	Image       string      `json:"image"`
	ImageDigest string      `json:"image_digest,omitempty"`
	CPUs        int         `json:"cpus"`
	MemoryMiB   int         `json:"memory_mib"`
	Created     time.Time   `json:"created"`
	Boot        *store.Boot `json:"boot,omitempty"`
	// Network is the source's network, which clones join by default.
	Network string `json:"network,omitempty"`
	// DroppedSecrets names the secrets the source held, removed from it
	// before saving (--drop-secrets): the snapshot has none of them.
	DroppedSecrets []string `json:"dropped_secrets,omitempty"`
	// Filled in when listing, not stored.
	Dir       string   `json:"dir"`
	SizeBytes int64    `json:"size_bytes"` // apparent size of every file
	DiskBytes int64    `json:"disk_bytes"` // blocks actually allocated
	Complete  bool     `json:"complete"`
	UsedBy    []string `json:"used_by,omitempty"` // VMs restored from it
	SaveSecs  float64  `json:"save_seconds,omitempty"`
}

// SnapshotsDir holds one directory per snapshot.
func (m *Manager) SnapshotsDir() string { return filepath.Join(m.Dirs.State, "snapshots") }

func (m *Manager) snapDir(name string) string { return filepath.Join(m.SnapshotsDir(), name) }

// SnapshotOptions are the choices of SnapshotCreateWith.
type SnapshotOptions struct {
	// DropSecrets removes a VM's secrets (/run/secrets, zeroed, unmounted)
	// before it is saved. Without it a VM given secrets is not saved: its
	// memory image would hold them. The VM runs on without them.
	DropSecrets bool
}

// SnapshotCreate saves a running or paused VM into a new snapshot. An empty
// snapName becomes VM-<UTC timestamp>. A VM given secrets is refused.
func (m *Manager) SnapshotCreate(ctx context.Context, vmName, snapName string) (*Snapshot, error) {
	return m.SnapshotCreateWith(ctx, vmName, snapName, SnapshotOptions{})
}

// SnapshotCreateWith is SnapshotCreate with options.
func (m *Manager) SnapshotCreateWith(ctx context.Context, vmName, snapName string, o SnapshotOptions) (*Snapshot, error) {
	if snapName == "" {
		snapName = vmName + "-" + time.Now().UTC().Format("20060102-150405")
	}
	if err := store.ValidateName(snapName); err != nil {
		return nil, fmt.Errorf("snapshot name: %w", err)
	}
	dir := m.snapDir(snapName)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("snapshot %q already exists (remove it with 'mvmctl snapshot rm %s')", snapName, snapName)
	}
	if err := os.MkdirAll(m.SnapshotsDir(), 0o700); err != nil {
		return nil, err
	}
	if _, err := m.snapshotTo(ctx, vmName, dir, snapName, o); err != nil {
		return nil, err
	}
	return m.snapshotInfo(snapName, nil)
}

// snapshotTo saves a running or paused VM into dir (which must not exist)
// under the name snapName; snapshot create and template build use it.
func (m *Manager) snapshotTo(ctx context.Context, vmName, dir, snapName string, o SnapshotOptions) (*Snapshot, error) {
	rec, err := m.Get(ctx, vmName)
	if err != nil {
		return nil, err
	}
	unlock, err := m.Store.Lock(vmName)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if rec.State != string(backend.StateRunning) && rec.State != string(backend.StatePaused) {
		return nil, fmt.Errorf("cannot snapshot: VM %q is %s; only a running or paused VM can be saved", vmName, rec.State)
	}
	h, err := m.handle(rec)
	if err != nil {
		return nil, err
	}
	be, err := backend.Get(rec.Backend)
	if err != nil {
		return nil, err
	}
	sn, ok := h.(backend.Snapshotter)
	if !ok || !be.Capabilities().Snapshot {
		return nil, backend.Unsupported(rec.Backend, "snapshots")
	}
	if len(rec.Secrets) > 0 {
		if !o.DropSecrets {
			return nil, fmt.Errorf("VM %s was given secrets (%s): %w; add --drop-secrets to remove them from the VM first (it keeps running without them, and clones get none)",
				vmName, strings.Join(rec.Secrets, ", "), errSecretsHeld)
		}
		if err := m.dropSecrets(ctx, rec, h); err != nil {
			return nil, err
		}
	}
	began := time.Now()
	if err := sn.Snapshot(ctx, dir); err != nil {
		return nil, err
	}
	// Restored clones keep the source's guest key (it is in the memory image).
	if err := copyGuestPin(rec.Dir, dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("snapshot %s: %w", snapName, err)
	}
	if err := copyBootstrapKey(rec.Dir, dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("snapshot %s: %w", snapName, err)
	}
	s := &Snapshot{
		Name: snapName, Source: vmName, Backend: rec.Backend, Image: rec.Image, ImageDigest: rec.ImageDigest,
		CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB, Created: time.Now().UTC(), Boot: rec.Boot,
		SaveSecs: time.Since(began).Seconds(),
	}
	if rec.Net != nil {
		s.Network = rec.Net.Network
	}
	s.DroppedSecrets = rec.Secrets
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := store.WriteFileAtomic(filepath.Join(dir, snapMetaFile), append(b, '\n'), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("snapshot %s: %w", snapName, err)
	}
	s.Dir = dir
	return s, nil
}

// GetSnapshot reads one snapshot's metadata.
func (m *Manager) GetSnapshot(name string) (*Snapshot, error) {
	if err := store.ValidateName(name); err != nil {
		return nil, fmt.Errorf("snapshot name: %w", err)
	}
	recs, _ := m.Store.List()
	return m.snapshotInfo(name, recs)
}

// readSnapshotAt reads the snapshot saved in dir (a template's).
func readSnapshotAt(dir string) (*Snapshot, error) {
	b, err := os.ReadFile(filepath.Join(dir, snapMetaFile))
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	s := &Snapshot{}
	if err := json.Unmarshal(b, s); err != nil || store.ValidateName(s.Name) != nil {
		return nil, fmt.Errorf("snapshot %s: unreadable %s", dir, snapMetaFile)
	}
	s.Dir, s.Complete = dir, true
	return s, nil
}

func (m *Manager) snapshotInfo(name string, recs []*store.Record) (*Snapshot, error) {
	dir := m.snapDir(name)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("no such snapshot %q (see 'mvmctl snapshot ls')", name)
	}
	s := &Snapshot{Name: name}
	if b, err := os.ReadFile(filepath.Join(dir, snapMetaFile)); err == nil && json.Unmarshal(b, s) == nil && s.Name == name {
		s.Complete = true
	} else {
		s.Name, s.Created = name, st.ModTime().UTC()
	}
	s.Dir = dir
	s.SizeBytes, s.DiskBytes = dirSize(dir)
	for _, r := range recs {
		if r.Snapshot == name {
			s.UsedBy = append(s.UsedBy, r.Name)
		}
	}
	// A pool's members restore over the snapshot's disks.
	s.UsedBy = append(s.UsedBy, m.poolsWhere(func(p *Pool) bool { return p.Snapshot == name })...)
	return s, nil
}

// DirSize sums apparent and allocated sizes of the files under dir.
func DirSize(dir string) (apparent, allocated int64) { return dirSize(dir) }

// dirSize sums apparent and allocated sizes of the files under dir.
func dirSize(dir string) (apparent, allocated int64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			apparent += fi.Size()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				allocated += st.Blocks * 512
			}
		}
		return nil
	})
	return apparent, allocated
}

// SnapshotList returns every snapshot, oldest first.
func (m *Manager) SnapshotList(ctx context.Context) ([]*Snapshot, error) {
	ents, err := os.ReadDir(m.SnapshotsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	recs, _ := m.Store.List()
	var out []*Snapshot
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || store.ValidateName(e.Name()) != nil {
			continue
		}
		if s, err := m.snapshotInfo(e.Name(), recs); err == nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// SnapshotRemove deletes a snapshot. VMs restored from it read its disks as
// backing files, so it is refused while any exist, unless force.
func (m *Manager) SnapshotRemove(ctx context.Context, name string, force bool) error {
	s, err := m.GetSnapshot(name)
	if err != nil {
		return err
	}
	if len(s.UsedBy) > 0 && !force {
		return fmt.Errorf("snapshot %q backs VMs %s: remove them first, or use -f (their disks will break)", name, strings.Join(s.UsedBy, ", "))
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	return nil
}

// dropSecrets has the agent zero and remove every secret and unmount its
// tmpfs, so the memory image about to be saved holds none. A paused VM is
// resumed for it and paused again. The record keeps the names: the VM
// still needs them on its next start.
func (m *Manager) dropSecrets(ctx context.Context, rec *store.Record, h backend.Handle) error {
	if rec.State == string(backend.StatePaused) {
		pr, ok := h.(backend.Pauser)
		if !ok {
			return fmt.Errorf("VM %s is paused and cannot be resumed to drop its secrets; resume it first", rec.Name)
		}
		if err := pr.Resume(ctx); err != nil {
			return fmt.Errorf("resume %s to drop its secrets: %w", rec.Name, err)
		}
		defer func() {
			if err := pr.Pause(ctx); err != nil {
				m.Log.Warn("could not pause the VM again after dropping its secrets", "vm", rec.Name, "err", err)
			}
		}()
	}
	p := &progress{vm: rec.Name, start: time.Now()}
	if err := m.deliverSecrets(ctx, m.agentClient(h, rec.Name), rec.Name, nil, p); err != nil {
		return fmt.Errorf("drop secrets before the snapshot: %w", err)
	}
	return nil
}

package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mvm-dev/mvm/internal/backend"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files inside a snapshot directory.
const (
	ManifestFile = "snapshot.json"
	stateName    = "state" // QEMU migration stream (device state; RAM too without memName)
	memName      = "mem"   // guest RAM image, when it is not in the stream
)

// manifestVersion changes when a snapshot written by one mvmctl cannot be
// read by another. Version 2 added the RAM file (Memory, MemBackend,
// Capabilities); this mvmctl still restores version 1 snapshots.
const (
	manifestVersion    = 2
	minManifestVersion = 1
)

// Migration capabilities: the source's are recorded and set again on the
// destination, which must parse the same stream format.
const (
	capEvents       = "events"
	capIgnoreShared = "x-ignore-shared" // RAM in shared backends stays out of the stream
)

var knownCaps = map[string]bool{capEvents: true, capIgnoreShared: true}

// sortedCaps lists knownCaps in a fixed order.
func sortedCaps() []string {
	out := make([]string, 0, len(knownCaps))
	for c := range knownCaps {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Manifest describes a snapshot: everything needed to start a QEMU whose
// machine and devices match the one that was saved, since a migration stream
// only loads into an identical configuration.
type Manifest struct {
	Version     int       `json:"version"`
	Backend     string    `json:"backend"`
	Source      string    `json:"source"` // name of the VM that was saved
	Created     time.Time `json:"created"`
	QEMUVersion string    `json:"qemu_version"` // from the QMP greeting, major.minor.micro
	QEMUPackage string    `json:"qemu_package,omitempty"`
	// WasRunning says whether the source ran (rather than was paused) when
	// saved; Restore resumes only such snapshots.
	WasRunning bool `json:"was_running"`

	Arch      string `json:"arch"`
	Binary    string `json:"binary,omitempty"`
	Accel     string `json:"accel"` // kvm, hvf or tcg; a snapshot restores only on the same
	ACPI      bool   `json:"acpi"`
	TSCKHz    int    `json:"tsc_khz,omitempty"`
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd,omitempty"`
	Cmdline   string `json:"cmdline,omitempty"` // the spec's part; the backend adds its own
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Transport string `json:"transport"`
	// NICs are the network devices' ids, in order: a clone gets devices of
	// the same ids with its own host side (TAP or user-mode) and MAC.
	NICs []string `json:"nics,omitempty"`

	Disks      []SnapshotDisk `json:"disks"` // in attach order
	State      string         `json:"state"` // file name inside the snapshot dir
	StateBytes int64          `json:"state_bytes"`
	// Memory is the guest RAM image inside the snapshot dir, saved from the
	// source's shared RAM file while the stream skipped it; clones map it
	// private. Empty: RAM is in the state stream.
	Memory      string `json:"memory,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"` // blocks allocated on disk
	// MemBackend says the source's RAM was a memory-backend-file, which a
	// clone must have too (its RAM block id is part of the stream).
	MemBackend bool `json:"mem_backend,omitempty"`
	// Capabilities are the migration capabilities the source set; empty
	// in version 1 snapshots, which used only "events".
	Capabilities []string `json:"capabilities,omitempty"`
	// SourceArgv is the saved VM's command line, kept to check that a
	// restore builds the same machine.
	SourceArgv []string `json:"source_argv"`
}

// SnapshotDisk is one drive of the saved VM.
type SnapshotDisk struct {
	ID       string `json:"id"`
	Format   string `json:"format"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// File is the disk's copy inside the snapshot dir (writable disks);
	// clones get their own overlay over it.
	File string `json:"file,omitempty"`
	// Path is attached as-is (read-only disks other than the config drive).
	Path string `json:"path,omitempty"`
	// Backing is the absolute backing file File refers to, if any (the
	// cached rootfs under a qcow2 overlay).
	Backing string `json:"backing,omitempty"`
}

// configDiskID is the id resolveDisks gives the config drive; a restore puts
// the clone's own config drive in its place.
const configDiskID = "config"

// Pins lists the files outside the snapshot directory that the snapshot needs
// to restore: the kernel, initrd, backing images and read-only disks. A cache
// prune must keep them.
func (m Manifest) Pins() []string {
	var out []string
	for _, p := range []string{m.Kernel, m.Initrd} {
		if p != "" {
			out = append(out, p)
		}
	}
	for _, d := range m.Disks {
		for _, p := range []string{d.Backing, d.Path} {
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// validate checks a manifest read from disk: it is untrusted input that names
// files and ends up in a command line.
func (m Manifest) validate() error {
	switch {
	case m.Version < minManifestVersion || m.Version > manifestVersion:
		return fmt.Errorf("snapshot format version %d, this mvmctl reads %d to %d", m.Version, minManifestVersion, manifestVersion)
	case m.Backend != Name:
		return fmt.Errorf("snapshot was made by backend %q, not %q", m.Backend, Name)
	case m.Kernel == "":
		return errors.New("snapshot names no kernel")
	case m.CPUs <= 0 || m.MemoryMiB <= 0:
		return fmt.Errorf("snapshot has invalid shape: %d cpus, %d MiB", m.CPUs, m.MemoryMiB)
	case m.Accel != "kvm" && m.Accel != "hvf" && m.Accel != "tcg":
		return fmt.Errorf("snapshot has unknown accelerator %q", m.Accel)
	case !localName(m.State):
		return fmt.Errorf("snapshot state file %q is not a plain file name", m.State)
	case m.Memory != "" && !localName(m.Memory):
		return fmt.Errorf("snapshot memory file %q is not a plain file name", m.Memory)
	case m.Memory != "" && !m.MemBackend:
		return errors.New("snapshot has a memory file but no memory backend")
	case m.Memory != "" && !slices.Contains(m.Capabilities, capIgnoreShared):
		return errors.New("snapshot has a memory file but its stream was saved with RAM")
	}
	for _, c := range m.Capabilities {
		if !knownCaps[c] {
			return fmt.Errorf("snapshot uses unknown migration capability %q", c)
		}
	}
	if _, ok := arches[m.Arch]; !ok {
		return fmt.Errorf("snapshot is for unsupported architecture %q", m.Arch)
	}
	for _, d := range m.Disks {
		if d.ID == "" {
			return errors.New("snapshot disk without id")
		}
		if d.File != "" && !localName(d.File) {
			return fmt.Errorf("snapshot disk %s: %q is not a plain file name", d.ID, d.File)
		}
		if d.File == "" && d.ID != configDiskID && !filepath.IsAbs(d.Path) {
			return fmt.Errorf("snapshot disk %s has neither a copy nor an absolute path", d.ID)
		}
		if d.Format != "raw" && d.Format != "qcow2" {
			return fmt.Errorf("snapshot disk %s has unsupported format %q", d.ID, d.Format)
		}
	}
	return nil
}

// localName reports whether s names a file directly inside a directory.
func localName(s string) bool {
	return s != "" && s != "." && s != ".." && filepath.Base(s) == s && s[0] != '.'
}

// ReadManifest loads and checks the manifest of the snapshot in dir.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("read snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("decode %s: %w", ManifestFile, err)
	}
	if err := m.validate(); err != nil {
		return m, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return m, nil
}

// writeManifest writes m into dir last, atomically: a snapshot directory
// without a manifest is an incomplete snapshot.
func writeManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+ManifestFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ManifestFile))
}

// launchFrom rebuilds the machine part of a launch from a manifest; the
// caller fills in the per-VM paths and disks.
func (m Manifest) launchFrom() launch {
	return launch{
		Arch: m.Arch, Binary: m.Binary, KVM: m.Accel == "kvm", HVF: m.Accel == "hvf", ACPI: m.ACPI, TSCKHz: m.TSCKHz,
		Kernel: m.Kernel, Initrd: m.Initrd, Cmdline: m.Cmdline,
		CPUs: m.CPUs, MemoryMiB: m.MemoryMiB, Transport: m.Transport,
		NICs: nicPlaceholders(m.NICs),
	}
}

// nicPlaceholders stands for the saved NICs until the clone's replace them.
func nicPlaceholders(ids []string) []backend.NIC {
	var out []backend.NIC
	for _, id := range ids {
		out = append(out, backend.NIC{ID: id})
	}
	return out
}

// caps returns the migration capabilities to set on a destination.
func (m Manifest) caps() []string {
	if len(m.Capabilities) == 0 {
		return []string{capEvents}
	}
	return m.Capabilities
}

package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Relocate rewrites the snapshot in dir so that each file it needs from
// outside itself (kernel, initrd, backing images: Manifest.Pins) is found
// where remap says instead. Templates use it when they take a snapshot's
// image files in (template build) or bring both to another host (pull):
// the paths a snapshot records are absolute, and QEMU's argv and the qcow2
// headers of its disks name them too. remap returns false for a path it
// leaves alone. Every pin must exist afterwards.
func Relocate(ctx context.Context, dir string, remap func(old string) (string, bool)) error {
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	moved := map[string]string{}
	sub := func(p string) string {
		if p == "" {
			return p
		}
		if n, ok := remap(p); ok && n != p {
			if !filepath.IsAbs(n) {
				return p
			}
			moved[p] = n
			return n
		}
		return p
	}
	m.Kernel, m.Initrd = sub(m.Kernel), sub(m.Initrd)
	for i := range m.Disks {
		d := &m.Disks[i]
		d.Path = sub(d.Path)
		old := d.Backing
		d.Backing = sub(d.Backing)
		if d.Backing != old && d.File != "" {
			if err := rebaseQcow2(ctx, filepath.Join(dir, d.File), d.Backing); err != nil {
				return fmt.Errorf("relocate disk %s: %w", d.ID, err)
			}
		}
	}
	// The saved argv names kernel and initrd as values of their own; drive
	// and object paths are blanked when machines are compared, but keep
	// them true anyway.
	for i, a := range m.SourceArgv {
		for o, n := range moved {
			if a == o {
				a = n
			} else if strings.Contains(a, "="+o) {
				a = strings.ReplaceAll(a, "="+o, "="+n)
			}
		}
		m.SourceArgv[i] = a
	}
	for _, p := range m.Pins() {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("relocated snapshot needs %s: %w", p, err)
		}
	}
	return writeManifest(dir, m)
}

// rebaseQcow2 points a qcow2 file at a new backing file holding the same
// bytes (an unsafe rebase: only the header changes). Saved disks are
// read-only files, so write access is lent for the change.
func rebaseQcow2(ctx context.Context, path, backing string) error {
	qimg, err := exec.LookPath("qemu-img")
	if err != nil {
		return fmt.Errorf("qemu-img is needed to move a snapshot's disk (install qemu-utils): %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	defer os.Chmod(path, fi.Mode().Perm())
	out, err := exec.CommandContext(ctx, qimg, "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", backing, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img rebase: %w: %s", err, strings.TrimSpace(string(out)))
	}
	got, err := qcow2Backing(path)
	if err != nil {
		return err
	}
	if got != backing {
		return fmt.Errorf("qemu-img rebase left backing %q, want %q", got, backing)
	}
	return nil
}

// SnapshotPins lists the files outside the snapshot in dir that it needs.
func SnapshotPins(dir string) ([]string, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	return m.Pins(), nil
}

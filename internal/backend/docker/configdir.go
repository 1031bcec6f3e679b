package docker

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Where a container's mvm.json comes from.
//
// The directory bind-mounted at GuestConfigDir is writable by the guest: it
// is mounted read-write because the agent deletes mvm.json (it holds the
// guest's private key) once read, and a container cannot unmount its bind
// mount. Whatever the guest leaves there, symlinks to host files included,
// is still there when the VM next starts, so the host never writes into a
// directory a container has had: each start creates a new directory with a
// random name under configParent (which is never mounted), creates mvm.json
// in it exclusively and without following links, mounts that one, and
// removes the earlier ones (os.RemoveAll unlinks links, it never follows
// them).

// configParent holds the per-start config directories. Only its children
// are mounted, so no guest ever sees or writes it.
const configParent = "guestconfig"

// newConfigDir makes a fresh config directory for the next container under
// vmDir, writes the guest config file into it, removes the directories of
// earlier starts, and returns the new directory's path.
func newConfigDir(vmDir string, config []byte) (string, error) {
	parent := filepath.Join(vmDir, configParent)
	if err := os.Mkdir(parent, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("config directory: %w", err)
	}
	// The host alone makes it, but check: it must be a directory, not a link.
	if fi, err := os.Lstat(parent); err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	} else if !fi.IsDir() {
		return "", fmt.Errorf("config directory %s is not a directory (%v)", parent, fi.Mode().Type())
	}
	removeOldConfigDirs(vmDir, parent)
	// MkdirTemp: a new name, created by mkdir, which never reuses an entry.
	dir, err := os.MkdirTemp(parent, "")
	if err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	}
	if err := writeNew(filepath.Join(dir, guestcfg.FileName), config, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("write guest config: %w", err)
	}
	return dir, nil
}

// removeOldConfigDirs deletes what earlier containers had mounted: the
// children of parent and the directory older versions mounted, legacyConfigDir.
// Best effort: a guest running as root can leave entries the host user may
// not delete; those stay behind, unused, and do not stop the start.
func removeOldConfigDirs(vmDir, parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		slog.Debug("list old config directories", "dir", parent, "err", err)
	}
	old := []string{filepath.Join(vmDir, legacyConfigDir)}
	for _, e := range entries {
		old = append(old, filepath.Join(parent, e.Name()))
	}
	for _, p := range old {
		if err := os.RemoveAll(p); err != nil {
			slog.Debug("remove old config directory", "dir", p, "err", err)
		}
	}
}

// writeNew creates path, which must not exist (not even as a dangling
// symlink: O_EXCL fails on any existing entry, O_NOFOLLOW on a link), and
// writes data to it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

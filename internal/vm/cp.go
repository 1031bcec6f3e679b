package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/tarx"
	"golang.org/x/sys/unix"
)

// CopyTo copies the host file or directory src to guestPath in VM name:
// into guestPath when it is a directory, else as that name. Modes are kept;
// files belong to user (default root).
func (m *Manager) CopyTo(ctx context.Context, name, src, guestPath, user string) (*proto.CopyResult, error) {
	if _, err := os.Lstat(src); err != nil {
		return nil, err
	}
	c, err := m.Agent(ctx, name, "copy to")
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := tarx.Write(pw, src)
		pw.CloseWithError(err)
	}()
	res, err := c.CopyIn(ctx, proto.CopyRequest{Path: guestPath, User: user}, pr)
	pr.Close()
	if err != nil {
		return nil, fmt.Errorf("copy %s to %s:%s: %w", src, name, guestPath, err)
	}
	return res, nil
}

// CopyFrom copies guestPath in VM name to the host path dst: into dst when
// it is a directory, else as that name. The archive is untrusted: every
// entry must lie under the one name asked for (base(guestPath) in dst, or
// dst), symlinks must point inside it, and nothing reaches dst unless the
// whole archive was valid (see receiveCopy).
func (m *Manager) CopyFrom(ctx context.Context, name, guestPath, dst string) (*proto.CopyResult, error) {
	return m.CopyFromWith(ctx, name, guestPath, dst, CopyOutOptions{})
}

// CopyOutOptions bound what a guest may write to the host in a copy out.
type CopyOutOptions struct {
	// MaxBytes bounds the file content; 0 means what the destination's
	// filesystem can take while keeping a reserve free (copyOutBudget).
	MaxBytes int64
	// MaxFiles bounds the entries; 0 means DefaultCopyOutMaxFiles.
	MaxFiles int
}

// DefaultCopyOutMaxFiles bounds the entries of a copy out by default: a
// guest must not exhaust the host's inodes.
const DefaultCopyOutMaxFiles = 1_000_000

// copyOutReserve is the free space a copy out leaves on the destination's
// filesystem at least (less on filesystems smaller than ten times it).
const copyOutReserve = 1 << 30

// copyOutBudget is how many bytes a copy into dir may write: the
// filesystem's available space minus a reserve, so a guest sending an
// endless file cannot fill the host's disk.
func copyOutBudget(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	reserve := min(int64(copyOutReserve), avail/10)
	return max(avail-reserve, 1)
}

// CopyFromWith is CopyFrom with bounds.
func (m *Manager) CopyFromWith(ctx context.Context, name, guestPath, dst string, o CopyOutOptions) (*proto.CopyResult, error) {
	dir, _, err := copyOutDest(guestPath, dst)
	if err != nil {
		return nil, err
	}
	if budget := copyOutBudget(dir); o.MaxBytes <= 0 || (budget > 0 && o.MaxBytes > budget) {
		o.MaxBytes = budget
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultCopyOutMaxFiles
	}
	c, err := m.Agent(ctx, name, "copy from")
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := receiveCopy(pr, guestPath, dst, o)
		pr.CloseWithError(err)
		done <- err
	}()
	res, err := c.CopyOut(ctx, proto.CopyRequest{Path: guestPath}, pw)
	pw.CloseWithError(err)
	xerr := <-done
	if err == nil || (xerr != nil && errors.Is(err, xerr)) {
		err = xerr // our refusal, not how the agent's stream ended
	}
	if err != nil {
		return nil, fmt.Errorf("copy %s:%s to %s: %w", name, guestPath, dst, err)
	}
	return res, nil
}

// copyOutDest says where a copy of guestPath to dst lands: as name in the
// directory dir. Like cp: inside dst when it is a directory, else as dst.
func copyOutDest(guestPath, dst string) (dir, name string, err error) {
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		return dst, tarx.TopName(guestPath), nil
	}
	dir, name = filepath.Dir(dst), filepath.Base(dst)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("copy to %s: directory %s does not exist", dst, dir)
	}
	return dir, name, nil
}

// maxTrailing bounds what a guest may send after the archive's end marker
// (tar pads to a record; more is someone not stopping).
const maxTrailing = 1 << 20

// stagePrefix starts the names of receiveCopy's staging directories.
const stagePrefix = ".mvm-cp-"

// receiveCopy extracts the guest's archive of guestPath to dst (see
// copyOutDest). The guest chooses the entries, so they are confined to
// the one name asked for (tarx.Options.Top) and extracted into a staging
// directory beside where the name lands; only when the whole stream was
// valid is the name moved into place. A refused archive leaves dst as it
// was.
func receiveCopy(r io.Reader, guestPath, dst string, o CopyOutOptions) (tarx.Stats, error) {
	var st tarx.Stats
	dir, name, err := copyOutDest(guestPath, dst)
	if err != nil {
		return st, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	defer root.Close()
	stagePath, err := os.MkdirTemp(dir, stagePrefix+"*")
	if err != nil {
		return st, fmt.Errorf("copy to %s: staging directory: %w", dst, err)
	}
	stage := filepath.Base(stagePath)
	defer root.RemoveAll(stage)
	staged, err := root.OpenRoot(stage)
	if err != nil {
		return st, fmt.Errorf("copy to %s: staging directory: %w", dst, err)
	}
	defer staged.Close()
	st, err = tarx.ExtractRoot(r, staged, tarx.Options{Top: tarx.TopName(guestPath), Rename: name, MaxBytes: o.MaxBytes, MaxFiles: o.MaxFiles})
	if err != nil {
		return st, err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r, maxTrailing+1))
	if err != nil {
		return st, fmt.Errorf("after the archive: %w", err)
	}
	if n > maxTrailing {
		return st, fmt.Errorf("the guest sent more than %d bytes after the archive's end", maxTrailing)
	}
	if st.Files == 0 {
		return st, fmt.Errorf("the guest sent an empty archive for %s", guestPath)
	}
	from := filepath.Join(stage, name)
	if err := place(root, from, name, true); err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := place(root, from, name, false); err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	return st, nil
}

// place moves the staged tree from onto to, both in root: a new name is
// renamed into place, a directory onto an existing directory is merged
// (what it holds placed in turn, then its mode and time), anything else
// replaces what is there, except that a directory is never replaced by a
// non-directory. With dryRun it only checks for that, so a conflict is
// found before anything moves.
func place(root *os.Root, from, to string, dryRun bool) error {
	sfi, err := root.Lstat(from)
	if err != nil {
		return err
	}
	dfi, err := root.Lstat(to)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if dryRun {
			return nil
		}
		return root.Rename(from, to)
	case err != nil:
		return err
	case dfi.IsDir() && sfi.IsDir():
		d, err := root.Open(from)
		if err != nil {
			return err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := place(root, filepath.Join(from, n), filepath.Join(to, n), dryRun); err != nil {
				return err
			}
		}
		if dryRun {
			return nil
		}
		if err := root.Chmod(to, sfi.Mode().Perm()); err != nil {
			return err
		}
		return root.Chtimes(to, sfi.ModTime(), sfi.ModTime())
	case dfi.IsDir():
		return fmt.Errorf("cannot overwrite directory %s with a non-directory", filepath.Join(root.Name(), to))
	default:
		if dryRun {
			return nil
		}
		if sfi.IsDir() {
			if err := root.Remove(to); err != nil {
				return err
			}
		}
		return root.Rename(from, to)
	}
}

package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Whiteout markers of OCI (and AUFS/overlay-converted Docker) layers.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// applyLayer unpacks one uncompressed layer over the staging tree, the way
// an overlay mount would see it: ".wh.NAME" deletes NAME from lower layers,
// ".wh..wh..opq" hides everything lower layers put in its directory, other
// entries replace what was there (directories merge). Whiteouts never touch
// what this same layer added. Names are confined to the root like any base
// tarball (stager.untarEntry).
func (s *stager) applyLayer(ctx context.Context, r io.Reader) error {
	added := map[string]bool{} // in-image paths this layer wrote
	return eachTarEntry(ctx, r, func(h *tar.Header, r io.Reader) error {
		return s.layerEntry(h, r, added)
	})
}

func (s *stager) layerEntry(h *tar.Header, r io.Reader, added map[string]bool) error {
	p, err := tarPath(h.Name)
	if err != nil {
		return err
	}
	base := path.Base(p)
	if !strings.HasPrefix(base, whiteoutPrefix) {
		// Layers need not list parent directories; lower layers or the
		// defaults (0755 root) supply them.
		if p != "/" {
			if _, err := s.mkdirAll(path.Dir(p)); err != nil {
				return err
			}
		}
		if err := s.untarEntry(h, r); err != nil {
			return err
		}
		// Record where the entry really went (parents may be links).
		if p == "/" {
			return nil
		}
		dir, err := resolveIn(s.root, path.Dir(p), true)
		if err == nil {
			added[path.Join(dir, base)] = true
		}
		return nil
	}
	dir, err := resolveIn(s.root, path.Dir(p), true)
	if err != nil {
		return nil // the directory is not there: nothing to hide
	}
	if fi, err := os.Lstat(filepath.Join(s.root, dir)); err != nil || !fi.IsDir() {
		return nil
	}
	if base == whiteoutOpaque {
		ents, err := os.ReadDir(filepath.Join(s.root, dir))
		if err != nil {
			return err
		}
		for _, e := range ents {
			child := path.Join(dir, e.Name())
			if added[child] {
				continue
			}
			if err := s.removeTree(child); err != nil {
				return err
			}
		}
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("bad whiteout %q", base)
	}
	victim := path.Join(dir, target)
	if added[victim] {
		return nil // whiteouts hide lower layers only
	}
	return s.removeTree(victim)
}

// removeTree deletes an in-image path (never following a final link) and
// everything under it; a missing path is fine.
func (s *stager) removeTree(p string) error {
	if p == "/" || p == "" {
		return errors.New("refusing to remove the root")
	}
	host := filepath.Join(s.root, p)
	if _, err := os.Lstat(host); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(host); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// rescan rebuilds the path list, size estimate and owner table from the
// staging tree after layers deleted and replaced entries.
func (s *stager) rescan() error {
	var paths []string
	var bytes int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(s.root, func(host string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, host)
		if err != nil {
			return err
		}
		p := path.Clean("/" + filepath.ToSlash(rel))
		paths = append(paths, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode().IsRegular():
			if ino := inodeOf(fi); ino != 0 && seen[ino] {
				return nil // another name of a hard-linked file
			} else if ino != 0 {
				seen[ino] = true
			}
			bytes += (fi.Size()+4095)/4096*4096 + 4096
		case fi.Mode()&fs.ModeSymlink != 0:
			bytes += 4096
		default:
			bytes += 4096
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan staging tree: %w", err)
	}
	have := make(map[string]bool, len(paths))
	for _, p := range paths {
		have[p] = true
	}
	for p := range s.owners {
		if !have[p] {
			delete(s.owners, p)
		}
	}
	s.paths, s.bytes = paths, bytes
	return nil
}

// ensureMountPoints creates the directories the agent mounts over when an
// image lacks them (scratch-based images have none).
func (s *stager) ensureMountPoints() error {
	for _, d := range []struct {
		p    string
		perm fs.FileMode
	}{
		{"/dev", 0o755}, {"/proc", 0o555}, {"/sys", 0o555}, {"/run", 0o755},
		{"/tmp", 0o777 | fs.ModeSticky}, {"/mnt", 0o755}, {"/mnt/config", 0o755},
	} {
		rp, err := resolveIn(s.root, d.p, true)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(filepath.Join(s.root, rp))
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", d.p)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := s.dir(rp, d.perm); err != nil {
			return err
		}
	}
	return nil
}

// fileOwner returns the uid and gid behind fi.
func fileOwner(fi fs.FileInfo) (int, int, bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}

// inodeOf returns the inode number behind fi, or 0 when unknown.
func inodeOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

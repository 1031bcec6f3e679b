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
)

// maxTarEntries bounds a base tarball; a Debian minbase has ~7000 entries.
const maxTarEntries = 1 << 20

// stageTarball unpacks a root filesystem tarball into root and returns the
// stager recording every path and non-root owner. Ownership is not applied
// on the host (it is set in the image afterwards), so no root is needed;
// device nodes and FIFOs are skipped because the agent mounts devtmpfs on
// /dev. Entries are confined to root even through symlinks.
func stageTarball(ctx context.Context, root, tarPath string) (*stager, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, fmt.Errorf("base tarball: %w", err)
	}
	defer f.Close()
	s := &stager{root: root, owners: map[string]owner{}}
	s.note("/", 0)
	if err := s.untar(ctx, f); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", filepath.Base(tarPath), err)
	}
	return s, nil
}

func (s *stager) untar(ctx context.Context, r io.Reader) error {
	return eachTarEntry(ctx, r, s.untarEntry)
}

// eachTarEntry calls fn for every entry of the tar stream r, checking ctx
// every 512 entries and refusing streams of more than maxTarEntries. Errors
// from fn name the entry.
func eachTarEntry(ctx context.Context, r io.Reader, fn func(*tar.Header, io.Reader) error) error {
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%512 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if n > maxTarEntries {
			return fmt.Errorf("more than %d entries", maxTarEntries)
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(h, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

// tarPath turns an archive name into a clean in-image path, refusing names
// that climb out of the root.
func tarPath(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", errors.New("bad name")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New("name has a '..' component")
		}
	}
	return path.Clean("/" + name), nil
}

func (s *stager) untarEntry(h *tar.Header, r io.Reader) error {
	p, err := tarPath(h.Name)
	if err != nil {
		return err
	}
	perm := fs.FileMode(h.Mode) & fs.ModePerm
	perm |= modeBits(uint32(h.Mode))
	if p == "/" {
		if h.Typeflag == tar.TypeDir {
			s.setOwner("/", h)
			return os.Chmod(s.root, perm)
		}
		return errors.New("root is not a directory")
	}
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	}
	// Parents through symlinks already in the tree, but never out of it.
	dir, err := resolveIn(s.root, path.Dir(p), true)
	if err != nil {
		return err
	}
	rp := path.Join(dir, path.Base(p))
	host := filepath.Join(s.root, rp)
	if fi, err := os.Lstat(host); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
		if err := os.RemoveAll(host); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(host, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chmod(host, perm); err != nil {
			return err
		}
		s.note(rp, 0)
	case tar.TypeReg:
		out, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(out, r)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Chmod(host, perm); err != nil {
			return err
		}
		s.note(rp, n)
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, host); err != nil {
			return err
		}
		s.paths = append(s.paths, rp)
		s.bytes += 4096
	case tar.TypeLink:
		tp, err := tarPath(h.Linkname)
		if err != nil {
			return err
		}
		target, err := resolveIn(s.root, tp, false)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(filepath.Join(s.root, target))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hard link to non-regular %s", h.Linkname)
		}
		if err := os.Link(filepath.Join(s.root, target), host); err != nil {
			return err
		}
		s.paths = append(s.paths, rp)
		return nil // shares the target's inode and owner
	default:
		return fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	s.setOwner(rp, h)
	return nil
}

func (s *stager) setOwner(p string, h *tar.Header) {
	if h.Uid != 0 || h.Gid != 0 {
		s.owners[p] = owner{uid: h.Uid, gid: h.Gid}
	} else {
		delete(s.owners, p)
	}
}

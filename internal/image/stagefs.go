package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// owner is a non-root owner recorded for an in-image path; mke2fs copies the
// builder's uid/gid, so owners are applied in the image afterwards.
type owner struct{ uid, gid int }

// maxSymlinkHops bounds symlink resolution inside a staging tree.
const maxSymlinkHops = 40

// resolveIn resolves the in-image path p inside the staging tree root,
// following symlinks the way the guest would (absolute targets are relative
// to root), so writes through links in an untrusted base never leave root.
// The final component is followed only when followLast is set. The result is
// an in-image path; a missing final component is allowed.
func resolveIn(root, p string, followLast bool) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("resolve %q: not absolute", p)
	}
	todo := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	hops := 0
	for len(todo) > 0 {
		comp := todo[0]
		todo = todo[1:]
		if comp == "" || comp == "." {
			continue
		}
		if comp == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, comp)
		fi, err := os.Lstat(filepath.Join(root, next))
		if errors.Is(err, fs.ErrNotExist) {
			if len(todo) == 0 {
				return next, nil
			}
			return "", fmt.Errorf("resolve %s: %s does not exist", p, next)
		}
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 || (len(todo) == 0 && !followLast) {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", fmt.Errorf("resolve %s: too many symlinks", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, nil
}

// mkdirAll creates the in-image directory p and missing parents (0755),
// through symlinks inside the tree, and returns its resolved path.
func (s *stager) mkdirAll(p string) (string, error) {
	if p == "/" {
		return "/", nil
	}
	parent, err := s.mkdirAll(path.Dir(p))
	if err != nil {
		return "", err
	}
	rp, err := resolveIn(s.root, path.Join(parent, path.Base(p)), true)
	if err != nil {
		return "", err
	}
	host := filepath.Join(s.root, rp)
	fi, err := os.Lstat(host)
	switch {
	case err == nil && fi.IsDir():
		return rp, nil
	case err == nil:
		return "", fmt.Errorf("stage %s: %s exists and is not a directory", p, rp)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("stage %s: %w", p, err)
	}
	if err := s.dir(rp, 0o755); err != nil {
		return "", err
	}
	return rp, nil
}

// put writes a root-owned file at in-image path p, creating parents and
// replacing whatever was there (a link is replaced, not followed). Exactly
// one of data and src is used: src when non-empty.
func (s *stager) put(p string, data []byte, src string, perm fs.FileMode) error {
	dir, err := s.mkdirAll(path.Dir(p))
	if err != nil {
		return err
	}
	rp := path.Join(dir, path.Base(p))
	host := filepath.Join(s.root, rp)
	if fi, err := os.Lstat(host); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("stage %s: is a directory", p)
		}
		if err := os.Remove(host); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
	}
	delete(s.owners, rp)
	if src != "" {
		return s.copy(rp, src, perm)
	}
	return s.file(rp, data, perm)
}

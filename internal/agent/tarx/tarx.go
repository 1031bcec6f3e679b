// Package tarx moves files between host and guest as tar streams (the
// agent's copy-in and copy-out). Write archives one file or tree without
// following symlinks; Extract unpacks an untrusted archive under one
// directory and never writes outside it: no absolute names, no "..", no
// writing through a symlink, no hard links, no device nodes.
package tarx

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stats counts what was archived or extracted.
type Stats struct {
	Files int   // entries: files, directories, symlinks
	Bytes int64 // regular file content
}

// maxName bounds entry names (PATH_MAX).
const maxName = 4096

// Write archives src (a file, directory or symlink) to w. Entry names start
// with base(src), so the receiver decides where that lands. Symlinks are
// stored as links, never followed; sockets, fifos and devices are skipped.
func Write(w io.Writer, src string) (Stats, error) {
	var st Stats
	tw := tar.NewWriter(w)
	src = filepath.Clean(src)
	top := filepath.Base(src)
	if top == "/" || top == "." {
		top = "root"
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := path.Join(top, filepath.ToSlash(rel))
		if rel == "." {
			name = top
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return nil // special files have no meaning on the other side
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		// Names and ids, not host/guest user names: the two sides' user
		// databases differ.
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		st.Files++
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			st.Bytes += n
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("archive %s: %w", src, err)
	}
	return st, tw.Close()
}

// Options tune Extract.
type Options struct {
	// Rename replaces the archive's first name component (the source's
	// base name) with this one: "cp a.txt vm:/tmp/b.txt".
	Rename string
	// Chown, when set, owns every extracted entry (uid, gid); otherwise
	// entries belong to the extracting process.
	Chown *[2]int
}

// Extract unpacks r under dest, an existing directory.
func Extract(r io.Reader, dest string, o Options) (Stats, error) {
	var st Stats
	fi, err := os.Stat(dest)
	if err != nil {
		return st, err
	}
	if !fi.IsDir() {
		return st, fmt.Errorf("extract: %s is not a directory", dest)
	}
	type dirTimes struct {
		path  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirTimes
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("extract: %w", err)
		}
		rel, err := cleanName(hdr.Name, o.Rename)
		if err != nil {
			return st, fmt.Errorf("extract: %w", err)
		}
		target := filepath.Join(dest, filepath.FromSlash(rel))
		if err := checkParents(dest, rel); err != nil {
			return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := mkdirNoFollow(target); err != nil {
				return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirTimes{target, mode, hdr.ModTime})
		case tar.TypeReg:
			n, err := writeFile(target, tr, mode)
			st.Bytes += n
			if err != nil {
				return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			_ = os.Chtimes(target, hdr.ModTime, hdr.ModTime)
		case tar.TypeSymlink:
			if err := removeIfNotDir(target); err != nil {
				return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			// The link is created as is; later entries never pass through
			// it (checkParents), so it cannot redirect writes.
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			return st, fmt.Errorf("extract %s: unsupported entry type %q (only files, directories and symlinks)", hdr.Name, hdr.Typeflag)
		}
		if o.Chown != nil {
			if err := os.Lchown(target, o.Chown[0], o.Chown[1]); err != nil {
				return st, fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		}
		st.Files++
	}
	// Directory modes last, deepest first: a read-only directory must not
	// stop its own contents from being written.
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chmod(dirs[i].path, dirs[i].mode)
		_ = os.Chtimes(dirs[i].path, dirs[i].mtime, dirs[i].mtime)
	}
	return st, nil
}

// cleanName validates an entry name and applies the rename. The result is
// relative, slash-separated, without "." or ".." components.
func cleanName(name, rename string) (string, error) {
	if name == "" || len(name) > maxName || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("invalid entry name %q", trunc(name))
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute entry name %q", trunc(name))
	}
	for _, c := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if c == ".." {
			return "", fmt.Errorf("entry name %q escapes the destination", trunc(name))
		}
	}
	clean := path.Clean(name)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("invalid entry name %q", trunc(name))
	}
	if rename != "" {
		if strings.ContainsAny(rename, "/\x00") || rename == "." || rename == ".." {
			return "", fmt.Errorf("invalid destination name %q", rename)
		}
		_, rest, _ := strings.Cut(clean, "/")
		clean = path.Join(rename, rest)
	}
	return clean, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// checkParents refuses rel when any directory between dest and the entry is
// a symlink or not a directory: writing through it could land outside dest.
func checkParents(dest, rel string) error {
	parts := strings.Split(rel, "/")
	p := dest
	for _, c := range parts[:len(parts)-1] {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Archives may omit directory entries.
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("refusing to write through symlink %s", p)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	return nil
}

func mkdirNoFollow(p string) error {
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.IsDir():
		return os.Chmod(p, fi.Mode().Perm()|0o700) // we must be able to fill it
	case err == nil:
		if err := os.Remove(p); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return os.Mkdir(p, 0o700)
}

func removeIfNotDir(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	return os.Remove(p)
}

// writeFile replaces p with the content of r. O_NOFOLLOW plus removing an
// existing entry first means a symlink planted at p is replaced, not
// followed.
func writeFile(p string, r io.Reader, mode fs.FileMode) (int64, error) {
	if err := removeIfNotDir(p); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// Package tarx moves files between host and guest as tar streams (the
// agent's copy-in and copy-out). Write archives one file or tree without
// following symlinks; Extract unpacks an untrusted archive under one
// directory and never writes outside it: no absolute names, no "..", no
// writing through a symlink, no hard links, no device nodes; with
// Options.Top it also confines the archive to one name and its symlinks to
// that name.
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
	"sort"
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
// with TopName(src), so the receiver decides where that lands. Symlinks are
// stored as links, never followed; sockets, fifos and devices are skipped.
func Write(w io.Writer, src string) (Stats, error) {
	src = filepath.Clean(src)
	dir, name := filepath.Dir(src), filepath.Base(src)
	if name == "/" || name == "." || name == ".." {
		dir, name = src, "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("archive %s: %w", src, err)
	}
	defer root.Close()
	return WriteRoot(w, root, name, TopName(src))
}

// TopName is the name an archive of p starts with: p's base name, or
// "root" for a root directory.
func TopName(p string) string {
	b := filepath.Base(filepath.Clean(p))
	if b == "/" || b == "." || b == ".." {
		return "root"
	}
	return b
}

// WriteRoot archives name (a path in root; "." for root itself) to w with
// entry names starting with top. Everything is read through root, so
// nothing outside it is archived, even if the tree changes meanwhile.
func WriteRoot(w io.Writer, root *os.Root, name, top string) (Stats, error) {
	var st Stats
	tw := tar.NewWriter(w)
	if err := writeEntry(tw, root, name, top, &st); err != nil {
		return st, fmt.Errorf("archive %s: %w", filepath.Join(root.Name(), name), err)
	}
	return st, tw.Close()
}

// writeEntry archives p (in root) as name, and what it holds.
func writeEntry(tw *tar.Writer, root *os.Root, p, name string, st *Stats) error {
	fi, err := root.Lstat(p)
	if err != nil {
		return err
	}
	var link string
	switch {
	case fi.Mode().IsRegular(), fi.IsDir():
	case fi.Mode()&fs.ModeSymlink != 0:
		if link, err = root.Readlink(p); err != nil {
			return err
		}
	default:
		return nil // special files have no meaning on the other side
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	// Names and ids, not host/guest user names: the two sides' user
	// databases differ.
	hdr.Uname, hdr.Gname = "", ""
	hdr.Format = tar.FormatPAX
	switch {
	case fi.Mode().IsRegular():
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// Only the file that was looked at: a name swapped for a link
		// since is not followed elsewhere.
		if ofi, err := f.Stat(); err != nil || !os.SameFile(fi, ofi) {
			return fmt.Errorf("%s changed while being archived", p)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		st.Files++
		n, err := io.Copy(tw, f)
		st.Bytes += n
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	case fi.IsDir():
		d, err := root.Open(p)
		if err != nil {
			return err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		st.Files++
		sort.Strings(names)
		for _, n := range names {
			if err := writeEntry(tw, root, path.Join(p, n), name+"/"+n, st); err != nil {
				return err
			}
		}
		return nil
	default:
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		st.Files++
		return nil
	}
}

// Options tune Extract.
type Options struct {
	// Rename replaces the archive's first name component (the source's
	// base name) with this one: "cp a.txt vm:/tmp/b.txt".
	Rename string
	// Chown, when set, owns every extracted entry (uid, gid), directories
	// the archive only implies included; otherwise entries belong to the
	// extracting process.
	Chown *[2]int
	// Top, when set, confines an archive from an untrusted sender to the
	// one name asked for: every entry must be Top or lie below it (before
	// Rename), and every symlink must point inside it (no absolute target,
	// no climbing out with ".."). Any other entry is refused.
	Top string
	// MaxBytes and MaxFiles, when set, bound the regular-file content and
	// the entries extracted: an archive from an untrusted sender that goes
	// past them is refused (ErrTooLarge) before the excess is written.
	MaxBytes int64
	MaxFiles int
}

// ErrTooLarge is returned when an archive exceeds Options.MaxBytes or
// Options.MaxFiles.
var ErrTooLarge = errors.New("archive exceeds the size limit")

// Extract unpacks r under dest, an existing directory.
func Extract(r io.Reader, dest string, o Options) (Stats, error) {
	root, err := os.OpenRoot(dest)
	if err != nil {
		return Stats{}, fmt.Errorf("extract: %w", err)
	}
	defer root.Close()
	return ExtractRoot(r, root, o)
}

// ExtractRoot unpacks r under root. Every write goes through root, so
// nothing lands outside it even if its contents change meanwhile.
func ExtractRoot(r io.Reader, root *os.Root, o Options) (Stats, error) {
	var st Stats
	if o.Top != "" && !validComponent(o.Top) {
		return st, fmt.Errorf("extract: invalid name %q", trunc(o.Top))
	}
	if o.Rename != "" && !validComponent(o.Rename) {
		return st, fmt.Errorf("extract: invalid destination name %q", trunc(o.Rename))
	}
	type dirTimes struct {
		name  string
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
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		fail := func(err error) (Stats, error) {
			return st, fmt.Errorf("extract %q: %w", trunc(hdr.Name), err)
		}
		rel, err := cleanName(hdr.Name, o)
		if err != nil {
			return fail(err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
		default:
			return fail(fmt.Errorf("unsupported entry type %q (only files, directories and symlinks)", hdr.Typeflag))
		}
		if hdr.Typeflag == tar.TypeSymlink && o.Top != "" {
			if err := linkInside(rel, hdr.Linkname); err != nil {
				return fail(err)
			}
		}
		target := filepath.FromSlash(rel)
		if err := makeParents(root, rel, o.Chown); err != nil {
			return fail(err)
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := mkdirNoFollow(root, target); err != nil {
				return fail(err)
			}
			dirs = append(dirs, dirTimes{target, mode, hdr.ModTime})
		case tar.TypeReg:
			// The tar reader yields exactly hdr.Size bytes, so the declared
			// size is what would be written.
			if o.MaxBytes > 0 && (hdr.Size < 0 || st.Bytes+hdr.Size > o.MaxBytes) {
				return fail(fmt.Errorf("%w: %s would bring the copy past %d bytes", ErrTooLarge, trunc(hdr.Name), o.MaxBytes))
			}
			n, err := writeFile(root, target, tr, mode, hdr.ModTime)
			st.Bytes += n
			if err != nil {
				return fail(err)
			}
		case tar.TypeSymlink:
			if err := removeIfNotDir(root, target); err != nil {
				return fail(err)
			}
			// The link is created as is; later entries never pass through
			// it (makeParents), so it cannot redirect writes.
			if err := root.Symlink(hdr.Linkname, target); err != nil {
				return fail(err)
			}
		}
		if o.Chown != nil {
			if err := root.Lchown(target, o.Chown[0], o.Chown[1]); err != nil {
				return fail(err)
			}
		}
		st.Files++
		if o.MaxFiles > 0 && st.Files > o.MaxFiles {
			return fail(fmt.Errorf("%w: more than %d entries", ErrTooLarge, o.MaxFiles))
		}
	}
	// Directory modes last, deepest first: a read-only directory must not
	// stop its own contents from being written.
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = root.Chmod(dirs[i].name, dirs[i].mode)
		_ = root.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime)
	}
	return st, nil
}

// validComponent reports whether s is one usable name component.
func validComponent(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= maxName && !strings.ContainsAny(s, "/\x00")
}

// cleanName validates an entry name, checks it against o.Top and applies
// o.Rename. The result is relative, slash-separated, without "." or ".."
// components.
func cleanName(name string, o Options) (string, error) {
	if name == "" || len(name) > maxName || strings.ContainsRune(name, 0) {
		return "", errors.New("invalid entry name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute entry name")
	}
	for _, c := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if c == ".." {
			return "", errors.New("entry name escapes the destination")
		}
	}
	clean := path.Clean(name)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", errors.New("invalid entry name")
	}
	first, rest, _ := strings.Cut(clean, "/")
	if o.Top != "" && first != o.Top {
		return "", fmt.Errorf("not under %q, the one name asked for", o.Top)
	}
	if o.Rename != "" {
		clean = path.Join(o.Rename, rest)
	}
	return clean, nil
}

// linkInside checks that a symlink at rel (its first component the top
// name) points inside the top name. The target may only climb with
// leading ".." components, and no higher than the top: the directories it
// climbs through are then real ones (makeParents), and every other link in
// the tree obeys the same rule, so no chain of links leads out either.
func linkInside(rel, target string) error {
	if target == "" {
		return errors.New("empty symlink target")
	}
	if path.IsAbs(target) {
		return fmt.Errorf("symlink target %q is absolute", trunc(target))
	}
	top, _, _ := strings.Cut(rel, "/")
	up, named := 0, false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return fmt.Errorf("symlink target %q climbs with \"..\" after a name", trunc(target))
			}
			up++
		default:
			named = true
		}
	}
	// A link at top/a/l may climb to top, once; the top itself not at all.
	if up > strings.Count(rel, "/")-1 || !strings.Contains(rel, "/") {
		return fmt.Errorf("symlink target %q points outside %q", trunc(target), top)
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// makeParents creates the directories between root and rel that the
// archive only implies (owned by chown when set), and refuses rel when any
// of them is a symlink or not a directory: writing through it could land
// somewhere the archive did not say.
func makeParents(root *os.Root, rel string, chown *[2]int) error {
	parts := strings.Split(rel, "/")
	p := ""
	for _, c := range parts[:len(parts)-1] {
		p = filepath.Join(p, c)
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if err := root.Mkdir(p, 0o755); err != nil {
				return err
			}
			if chown != nil {
				if err := root.Lchown(p, chown[0], chown[1]); err != nil {
					return err
				}
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

func mkdirNoFollow(root *os.Root, p string) error {
	fi, err := root.Lstat(p)
	switch {
	case err == nil && fi.IsDir():
		return root.Chmod(p, fi.Mode().Perm()|0o700) // we must be able to fill it
	case err == nil:
		if err := root.Remove(p); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return root.Mkdir(p, 0o700)
}

func removeIfNotDir(root *os.Root, p string) error {
	fi, err := root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	return root.Remove(p)
}

// writeFile replaces p with the content of r. Removing an existing entry
// first and creating with O_EXCL means a symlink planted at p is replaced,
// not followed.
func writeFile(root *os.Root, p string, r io.Reader, mode fs.FileMode, mtime time.Time) (int64, error) {
	if err := removeIfNotDir(root, p); err != nil {
		return 0, err
	}
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && !mtime.IsZero() {
		tv := unix.NsecToTimeval(mtime.UnixNano())
		_ = unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

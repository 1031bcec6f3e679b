package image

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// cpio "newc" (SVR4, no CRC) as the kernel's initramfs unpacker reads it.
// Entries are written sorted by name with mtime 0, so the same entries give
// the same bytes.

const cpioTrailer = "TRAILER!!!"

// Mode bits of the newc header (octal, as in <sys/stat.h>).
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

// cpioEntry is one archive member. Name is relative ("init", "lib/x.ko").
type cpioEntry struct {
	Name     string
	Type     uint32 // cpioDir, cpioRegular, cpioSymlink, cpioCharDev
	Perm     uint32 // permission bits incl. setuid/sticky, e.g. 0o755
	UID, GID uint32
	Data     []byte // regular file contents, when Source is empty
	Source   string // regular file contents from this host file
	Target   string // symlink target
	Major    uint32 // device number of char devices
	Minor    uint32
}

// cpioArchive collects entries and writes them in order.
type cpioArchive struct {
	entries map[string]*cpioEntry
}

func newCPIO() *cpioArchive { return &cpioArchive{entries: map[string]*cpioEntry{}} }

func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)[1:]
	if n == "" {
		return "", fmt.Errorf("cpio: empty name %q", name)
	}
	return n, nil
}

// Add inserts e, creating missing parent directories (0755, root).
func (a *cpioArchive) Add(e cpioEntry) error {
	n, err := cleanName(e.Name)
	if err != nil {
		return err
	}
	e.Name = n
	if old, ok := a.entries[n]; ok && !(old.Type == cpioDir && e.Type == cpioDir) {
		return fmt.Errorf("cpio: duplicate entry %s", n)
	}
	switch e.Type {
	case cpioDir, cpioRegular, cpioSymlink, cpioCharDev:
	default:
		return fmt.Errorf("cpio: %s: unsupported type %o", n, e.Type)
	}
	for dir := path.Dir(n); dir != "."; dir = path.Dir(dir) {
		if p, ok := a.entries[dir]; ok {
			if p.Type != cpioDir {
				return fmt.Errorf("cpio: %s: parent %s is not a directory", n, dir)
			}
			continue
		}
		a.entries[dir] = &cpioEntry{Name: dir, Type: cpioDir, Perm: 0o755}
	}
	a.entries[n] = &e
	return nil
}

// WriteTo writes the archive, sorted by name, followed by the trailer.
func (a *cpioArchive) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// A parent sorts before its children because it is their prefix.
	sort.Strings(names)
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	for i, n := range names {
		if err := writeCPIOEntry(cw, a.entries[n], uint32(i+1)); err != nil {
			return cw.n, err
		}
	}
	if err := writeCPIOHeader(cw, cpioTrailer, 0, 0, 0, 0, 1, 0, 0, 0); err != nil {
		return cw.n, err
	}
	if err := cw.pad(); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

func writeCPIOEntry(cw *countWriter, e *cpioEntry, ino uint32) error {
	mode := e.Type | e.Perm&0o7777
	switch e.Type {
	case cpioDir:
		return writeCPIOHeader(cw, e.Name, ino, mode, e.UID, e.GID, 2, 0, 0, 0)
	case cpioCharDev:
		return writeCPIOHeader(cw, e.Name, ino, mode, e.UID, e.GID, 1, 0, e.Major, e.Minor)
	case cpioSymlink:
		if e.Target == "" {
			return fmt.Errorf("cpio: symlink %s has no target", e.Name)
		}
		if err := writeCPIOHeader(cw, e.Name, ino, mode, e.UID, e.GID, 1, uint32(len(e.Target)), 0, 0); err != nil {
			return err
		}
		if _, err := io.WriteString(cw, e.Target); err != nil {
			return err
		}
		return cw.pad()
	}
	// Regular file.
	var r io.Reader
	size := int64(len(e.Data))
	if e.Source != "" {
		f, err := os.Open(e.Source)
		if err != nil {
			return fmt.Errorf("cpio: %s: %w", e.Name, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("cpio: %s: %w", e.Name, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("cpio: %s: source %s is not a regular file", e.Name, e.Source)
		}
		size, r = fi.Size(), f
	} else {
		r = bytes.NewReader(e.Data)
	}
	if size > 0xffffffff {
		return fmt.Errorf("cpio: %s: file larger than 4 GiB", e.Name)
	}
	if err := writeCPIOHeader(cw, e.Name, ino, mode, e.UID, e.GID, 1, uint32(size), 0, 0); err != nil {
		return err
	}
	n, err := io.Copy(cw, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("cpio: %s: %w", e.Name, err)
	}
	if n != size {
		return fmt.Errorf("cpio: %s: file changed size while archiving", e.Name)
	}
	return cw.pad()
}

func writeCPIOHeader(cw *countWriter, name string, ino, mode, uid, gid, nlink, size, rmaj, rmin uint32) error {
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with NUL), check.
	_, err := fmt.Fprintf(cw, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		ino, mode, uid, gid, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0, name)
	if err != nil {
		return err
	}
	return cw.pad()
}

// countWriter tracks the offset for newc's 4-byte alignment.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countWriter) pad() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

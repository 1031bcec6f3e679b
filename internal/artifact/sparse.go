package artifact

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// sparseBlock is the granularity of hole punching: runs of zeros shorter
// than a filesystem block cannot become holes anyway.
const sparseBlock = 4096

var zeros = make([]byte, 1<<20)

// sparseWriter writes a stream into a fresh file from offset 0, skipping
// every block-aligned all-zero block so it stays a hole. The caller
// truncates the file to its size at the end, which also makes a trailing
// run of zeros a hole.
type sparseWriter struct {
	f    *os.File
	off  int64
	data bool // some block was not all zeros
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// A run of zero blocks is skipped, the run of data blocks after it
		// written in one go.
		i := w.run(p, true)
		w.off += int64(i)
		p = p[i:]
		j := w.run(p, false)
		if j == 0 {
			continue
		}
		if _, err := w.f.WriteAt(p[:j], w.off); err != nil {
			return n - len(p), err
		}
		w.data = true
		w.off += int64(j)
		p = p[j:]
	}
	return n, nil
}

// run returns the length of the leading blocks of p (aligned on the file's
// blocks, p starting at w.off) that are all zero, or all not.
func (w *sparseWriter) run(p []byte, zero bool) int {
	i := 0
	for i < len(p) {
		end := min(len(p), i+int(sparseBlock-(w.off+int64(i))%sparseBlock))
		if bytes.Equal(p[i:end], zeros[:end-i]) != zero {
			break
		}
		i = end
	}
	return i
}

// limitWriter fails once more than n bytes are written, so a stream that
// decompresses to more than its chunk declares stops there.
type limitWriter struct {
	w io.Writer
	n int64
}

var errTooLong = errors.New("more data than declared")

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errTooLong
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

// writeZeros feeds n zero bytes to w (a hash).
func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// syncDir makes a rename or create in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// renameChecked is the fallback: rename(2) would replace an empty directory,
// so look first (the destination lock keeps our own pulls out of the gap).
func renameChecked(from, to string) error {
	if _, err := os.Lstat(to); err == nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rename: %w", err)
	}
	return os.Rename(from, to)
}

package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// followPoll is how often a followed log is checked for new output.
var followPoll = 200 * time.Millisecond

// oldLog is the rotated generation of a console log: the supervisor keeps
// one, renaming serial.log to serial.log.1 when it reaches its size limit.
func oldLog(path string) string { return path + ".1" }

// Logs writes the last n lines (n <= 0: all) of the VM's serial console log
// to w and, with follow, keeps copying new output until ctx ends or the VM
// stops. The log's rotated generation is read first when the lines asked for
// reach back into it, and following carries on across rotations.
func (m *Manager) Logs(ctx context.Context, name string, n int, follow bool, w io.Writer) error {
	rec, err := m.Store.Get(name)
	if err != nil {
		return err
	}
	path := m.SerialLog(rec.Name)
	f, err := writeLogTail(path, n, w)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("VM %q has no console log yet", name)
	}
	if err != nil {
		return err
	}
	if !follow {
		if f != nil {
			f.Close()
		}
		return nil
	}
	gone := func() bool {
		r, err := m.Get(ctx, name)
		return err == nil && !active(r.State)
	}
	return followLog(ctx, path, f, w, gone)
}

// writeLogTail writes the last n lines (n <= 0: all) of the log at path and
// its old generation to w. It returns the current file positioned at its
// end, or nil when only the old generation exists (mid-rotation).
func writeLogTail(path string, n int, w io.Writer) (*os.File, error) {
	// The old generation first: a rotation between the two opens then loses
	// a generation from the output rather than repeating one.
	old, err := openLog(oldLog(path))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if old != nil {
		defer old.Close()
	}
	f, err := openLog(path)
	if err != nil && (!errors.Is(err, os.ErrNotExist) || old == nil) {
		return nil, err
	}
	if f != nil && old != nil && sameFile(f, old) {
		old = nil // mid-rotation: both names are the current file
	}
	fail := func(err error) (*os.File, error) {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	var cur []byte
	if f != nil {
		if cur, err = io.ReadAll(f); err != nil {
			return fail(err)
		}
	}
	switch {
	case n <= 0 && old != nil:
		if _, err := io.Copy(w, old); err != nil {
			return fail(err)
		}
	case n <= 0:
	case old == nil:
		cur, _ = lastLines(cur, n)
	default:
		t, enough := lastLines(cur, n)
		if !enough {
			ob, err := io.ReadAll(old)
			if err != nil {
				return fail(err)
			}
			// Joined, so a line cut by the rotation counts once.
			t, _ = lastLines(append(ob, cur...), n)
		}
		cur = t
	}
	if _, err := w.Write(cur); err != nil {
		return fail(err)
	}
	return f, nil
}

// lastLines returns the last n lines of b and whether they all begin after
// a newline in b. When they do not, the first may continue a line that began
// before b (in the old generation).
func lastLines(b []byte, n int) ([]byte, bool) {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end-- // the final newline ends the last line; it does not start one
	}
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(b[:end], '\n')
		if j < 0 {
			return b, false
		}
		end = j
	}
	return b[end+1:], true
}

func sameFile(a, b *os.File) bool {
	as, err1 := a.Stat()
	bs, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(as, bs)
}

// followLog copies what is appended to the log at path, starting from f's
// offset (f may be nil: the file is not there yet), until ctx ends or gone,
// asked every few seconds of silence, reports that the VM has stopped. When
// path is replaced (rotated) it finishes the old file and continues with the
// new one from its start; when it is truncated it starts over.
func followLog(ctx context.Context, path string, f *os.File, w io.Writer, gone func() bool) error {
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	buf := make([]byte, 32<<10)
	idle := 0
	for {
		if f != nil {
			k, err := f.Read(buf)
			if k > 0 {
				if _, werr := w.Write(buf[:k]); werr != nil {
					return werr
				}
				idle = 0
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
		// At the end of f: has the log moved on?
		if st, err := os.Stat(path); err == nil {
			fst, ferr := fstat(f)
			switch {
			case f == nil || ferr != nil || !os.SameFile(st, fst):
				nf, err := openLog(path)
				if err != nil {
					break // gone again; try on the next tick
				}
				if f != nil {
					// What was written after our last read and before the
					// rotation; the old file is not written any more.
					if _, err := io.Copy(w, f); err != nil {
						nf.Close()
						return err
					}
					f.Close()
				}
				f = nf
				continue
			default:
				if pos, err := f.Seek(0, io.SeekCurrent); err == nil && st.Size() < pos {
					if _, err := f.Seek(0, io.SeekStart); err != nil {
						return err
					}
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		// Every few seconds of silence, stop following a VM that is gone.
		if idle++; idle%25 == 0 && gone != nil && gone() {
			return nil
		}
	}
}

func fstat(f *os.File) (os.FileInfo, error) {
	if f == nil {
		return nil, os.ErrClosed
	}
	return f.Stat()
}

// openLog opens a console log that must lie inside its VM's directory. A
// container's log lives in a directory the guest can write (run/, linked
// from the VM directory), so the guest could put a link there to any host
// file: every link is resolved and the result must stay in the VM
// directory, and the last component is opened without following links.
func openLog(path string) (*os.File, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(real, dir+string(filepath.Separator)) {
		return nil, fmt.Errorf("console log %s leads to %s, outside the VM's directory: refusing to read it (a guest-planted link?)", path, real)
	}
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: real, Err: err}
	}
	f := os.NewFile(uintptr(fd), real)
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("console log %s is not a regular file", real)
	}
	return f, nil
}

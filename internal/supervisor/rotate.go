package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"sync"
)

// DefaultConsoleMax is the size at which the console log is rotated. One
// old generation is kept, so a VM's console takes at most about twice this.
const DefaultConsoleMax = 8 << 20

// Rotator appends to a log file and, when a write would take it past Max
// bytes, makes the file the single old generation (path.1, replacing the one
// before) and starts an empty one. It cuts at a newline when the write has one
// that still fits, so lines are rarely split across the two files. Safe for
// concurrent use.
type Rotator struct {
	Path string
	Max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OldPath is the rotated generation of the log at path.
func OldPath(path string) string { return path + ".1" }

// OpenRotator opens path for appending. With fresh, a non-empty file is
// rotated first, so path holds only what is written from now on and the
// previous run's output stays in the old generation.
func OpenRotator(path string, max int64, fresh bool) (*Rotator, error) {
	if max <= 0 {
		max = DefaultConsoleMax
	}
	r := &Rotator{Path: path, Max: max}
	if err := r.open(); err != nil {
		return nil, err
	}
	if fresh && r.size > 0 {
		if err := r.rotate(); err != nil {
			r.f.Close()
			return nil, err
		}
	}
	return r, nil
}

func (r *Rotator) open() error {
	f, err := os.OpenFile(r.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open console log: %w", err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// Write appends p, rotating as needed. On error the rest of p is lost; the
// caller counts it as dropped.
func (r *Rotator) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	written := 0
	write := func(b []byte) error {
		n, err := r.f.Write(b)
		r.size += int64(n)
		written += n
		return err
	}
	for len(p) > 0 {
		room := r.Max - r.size
		if room <= 0 {
			if err := r.rotate(); err != nil {
				return written, err
			}
			continue
		}
		if int64(len(p)) <= room {
			return written, write(p)
		}
		// It does not fit: fill up to the last newline that does, then
		// rotate. With none, start the run in a new file, or cut it when
		// it is longer than a whole file.
		cut := int64(bytes.LastIndexByte(p[:room], '\n') + 1)
		if cut == 0 && r.size > 0 {
			if err := r.rotate(); err != nil {
				return written, err
			}
			continue
		}
		if cut == 0 {
			cut = room
		}
		if err := write(p[:cut]); err != nil {
			return written, err
		}
		p = p[cut:]
		if err := r.rotate(); err != nil {
			return written, err
		}
	}
	return written, nil
}

// rotate makes the current file the old generation and opens a new one.
// Path never goes missing for readers: the old generation is made a hard
// link first and the new file is renamed over Path, so a reader sees either
// the old inode or the new one (and briefly the same inode under both names).
func (r *Rotator) rotate() error {
	old := OldPath(r.Path)
	tmpOld := old + ".tmp"
	os.Remove(tmpOld)
	if err := os.Link(r.Path, tmpOld); err == nil {
		if err := os.Rename(tmpOld, old); err != nil {
			os.Remove(tmpOld)
			return fmt.Errorf("rotate console log: %w", err)
		}
		tmp := r.Path + ".new"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("rotate console log: %w", err)
		}
		if err := os.Rename(tmp, r.Path); err != nil {
			f.Close()
			os.Remove(tmp)
			return fmt.Errorf("rotate console log: %w", err)
		}
		r.f.Close()
		r.f, r.size = f, 0
		return nil
	}
	// No hard links on this file system: a plain rename, with a moment
	// where Path is missing.
	if err := os.Rename(r.Path, old); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	r.f.Close()
	r.f = nil
	return r.open()
}

// Close closes the current file.
func (r *Rotator) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gofrs/flock"
)

const recordFile = "vm.json"

// Store is the directory of VM records.
type Store struct {
	dir string
}

// New returns a store rooted at dir (paths.Dirs.VMsDir()).
func New(dir string) *Store { return &Store{dir: dir} }

// Dir returns the VM's directory.
func (s *Store) Dir(name string) string { return filepath.Join(s.dir, name) }

// LockPath is the VM's lock file; holders may change the record.
func (s *Store) LockPath(name string) string { return filepath.Join(s.dir, ".locks", name+".lock") }

// Lock takes the VM's exclusive lock; the returned func releases it. Locks
// live outside the VM dir so that removing the VM cannot race its lock.
func (s *Store) Lock(name string) (func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(s.LockPath(name)), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	l := flock.New(s.LockPath(name))
	if err := l.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return func() { _ = l.Unlock() }, nil
}

// Create claims name by creating its directory (atomic: exactly one of many
// concurrent creators wins) and writes the first record.
func (s *Store) Create(rec *Record) error {
	if err := ValidateName(rec.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	dir := s.Dir(rec.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %q (pick another --name, or remove it and everything it owns with 'mvmctl rm -f %s')", ErrExists, rec.Name, rec.Name)
		}
		return fmt.Errorf("create VM dir: %w", err)
	}
	rec.Dir = dir
	return s.Put(rec)
}

// Put writes rec atomically.
func (s *Store) Put(rec *Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(s.Dir(rec.Name), recordFile), append(b, '\n'), 0o600)
}

// Adopt claims name for a VM whose directory already exists elsewhere (a
// warm pool's member, handed out while its QEMU and supervisor run): the
// name becomes a relative symlink to that directory, atomically (exactly
// one of many concurrent claimers wins), and rec is written through it.
// A running VM's directory is never renamed: QEMU and the supervisor hold
// absolute paths into it (pid files, sockets, logs they reopen), so the
// directory keeps its path and the user's name points at it.
func (s *Store) Adopt(rec *Record, target string) error {
	if err := ValidateName(rec.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	rel, err := filepath.Rel(s.dir, target)
	if err != nil {
		return fmt.Errorf("adopt %s: %w", target, err)
	}
	if err := os.Symlink(rel, s.Dir(rec.Name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %q (pick another --name, or remove it and everything it owns with 'mvmctl rm -f %s')", ErrExists, rec.Name, rec.Name)
		}
		return fmt.Errorf("claim VM name: %w", err)
	}
	rec.Dir = target
	return s.Put(rec)
}

// realDir is the directory behind a VM's name: its own, or the one its
// name links to (Adopt).
func (s *Store) realDir(name string) string {
	p := s.Dir(name)
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := os.Readlink(p); err == nil {
			if !filepath.IsAbs(t) {
				t = filepath.Join(s.dir, t)
			}
			return filepath.Clean(t)
		}
	}
	return p
}

// Get reads one record.
func (s *Store) Get(name string) (*Record, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(name), recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Lstat(s.Dir(name)); derr == nil {
			// The directory exists but the record does not: a crash between
			// Mkdir and the first Put (or a name whose adopted directory is
			// gone). Report it instead of hiding it.
			return &Record{Name: name, State: "failed", Reason: "incomplete record (interrupted create)", Dir: s.realDir(name)}, nil
		}
		return nil, fmt.Errorf("%w: %q (see 'mvmctl ls -a')", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", name, err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return &Record{Name: name, State: "failed", Reason: fmt.Sprintf("corrupt record: %v", err), Dir: s.realDir(name)}, nil
	}
	rec.Dir = s.realDir(name)
	return &rec, nil
}

// List returns every record, sorted by name.
func (s *Store) List() ([]*Record, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	var out []*Record
	for _, e := range ents {
		if (!e.IsDir() && e.Type()&fs.ModeSymlink == 0) || strings.HasPrefix(e.Name(), ".") || ValidateName(e.Name()) != nil {
			continue
		}
		rec, err := s.Get(e.Name())
		if err != nil {
			continue // removed while listing
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes the VM's directory and lock file. An adopted name's
// directory goes before its link, so a crash in between leaves a name that
// Get reports and Remove cleans again, never a directory nothing names.
func (s *Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if real := s.realDir(name); real != s.Dir(name) {
		if err := os.RemoveAll(real); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	if err := os.RemoveAll(s.Dir(name)); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	_ = os.Remove(s.LockPath(name))
	return nil
}

// Exists reports whether name is taken.
func (s *Store) Exists(name string) bool {
	_, err := os.Lstat(s.Dir(name))
	return err == nil
}

// WriteFileAtomic writes data to path via a temp file in the same directory,
// fsyncs it, renames it over path and fsyncs the directory, so readers see the
// old or the new content and never a torn file, even across a crash.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

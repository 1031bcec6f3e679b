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

// Get reads one record.
func (s *Store) Get(name string) (*Record, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(name), recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(s.Dir(name)); derr == nil {
			// The directory exists but the record does not: a crash between
			// Mkdir and the first Put. Report it instead of hiding it.
			return &Record{Name: name, State: "failed", Reason: "incomplete record (interrupted create)", Dir: s.Dir(name)}, nil
		}
		return nil, fmt.Errorf("%w: %q (see 'mvmctl ls -a')", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", name, err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return &Record{Name: name, State: "failed", Reason: fmt.Sprintf("corrupt record: %v", err), Dir: s.Dir(name)}, nil
	}
	rec.Dir = s.Dir(name)
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
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || ValidateName(e.Name()) != nil {
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

// Remove deletes the VM's directory and lock file.
func (s *Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := os.RemoveAll(s.Dir(name)); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	_ = os.Remove(s.LockPath(name))
	return nil
}

// Exists reports whether name is taken.
func (s *Store) Exists(name string) bool {
	_, err := os.Stat(s.Dir(name))
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

package network

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

	"github.com/mvm-dev/mvm/internal/store"
)

// Store is the directory of network records, <share>/networks.
type Store struct {
	dir string
}

// NewStore returns a store rooted at dir.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string) string { return filepath.Join(s.dir, name+".json") }

// ValidateName checks a network name: the same rules as VM names, since it
// becomes a DNS zone ("web.<network>") and a file name.
func ValidateName(name string) error {
	if err := store.ValidateName(name); err != nil {
		return fmt.Errorf("%s", strings.Replace(err.Error(), "VM name", "network name", 1))
	}
	if name == ModeNone || name == ModeUser || name == "host" {
		return fmt.Errorf("invalid network name %q: reserved (--network %s means something else)", name, name)
	}
	return nil
}

// Lock takes the network's exclusive lock; every change of its record (and
// so every address allocation) happens under it.
func (s *Store) Lock(name string) (func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, ".locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock network %s: %w", name, err)
	}
	l := flock.New(filepath.Join(dir, name+".lock"))
	if err := l.Lock(); err != nil {
		return nil, fmt.Errorf("lock network %s: %w", name, err)
	}
	return func() { _ = l.Unlock() }, nil
}

// Get reads one record. A corrupt record is an error that names the file:
// guessing its subnet could hand out addresses twice.
func (s *Store) Get(name string) (*Network, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q (see 'mvmctl network ls'; create it with 'mvmctl network create %s')", ErrNotFound, name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read network %s: %w", name, err)
	}
	var n Network
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("network %s: corrupt record %s: %v (fix or remove the file)", name, s.path(name), err)
	}
	if n.Name != name {
		return nil, fmt.Errorf("network %s: record %s names %q", name, s.path(name), n.Name)
	}
	if n.Attached == nil {
		n.Attached = map[string]*Attachment{}
	}
	return &n, nil
}

// Put writes n atomically. The caller holds n's lock.
func (s *Store) Put(n *Network) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("write network %s: %w", n.Name, err)
	}
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(s.path(n.Name), append(b, '\n'), 0o600)
}

// Exists reports whether name has a record.
func (s *Store) Exists(name string) bool {
	_, err := os.Stat(s.path(name))
	return err == nil
}

// Remove deletes the record. The caller holds the lock.
func (s *Store) Remove(name string) error {
	if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	return nil
}

// List returns every readable record, sorted by name, and the errors of
// those it could not read.
func (s *Store) List() ([]*Network, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var out []*Network
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(name, ".") || ValidateName(name) != nil {
			continue
		}
		n, err := s.Get(name)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

func sortStrings(s []string) { sort.Strings(s) }

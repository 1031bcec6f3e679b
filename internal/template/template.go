// Package template keeps named templates: an image (catalog name, recipe,
// or image files of its own) plus the defaults `up --template` applies, and
// optionally a snapshot that `up --template` restores instead of booting.
// Records live in <share>/templates/<name>/, one directory per template:
//
//	template.json   the record (Template)
//	image/          the image's files, once built or pulled (vmlinuz,
//	                initrd.img, rootfs.ext4, manifest.json)
//	snapshot/       a backend snapshot whose paths point into image/
//
// A template's directory is self-contained, so it can be pushed, pulled and
// deleted without touching the image cache.
package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/mvm-dev/mvm/internal/store"
)

// Files and directories inside a template's directory.
const (
	RecordFile  = "template.json"
	ImageDir    = "image"
	SnapshotDir = "snapshot"
)

// formatVersion is the record's format; a newer record is refused rather
// than half-read.
const formatVersion = 1

// ErrNotFound is returned for a template that does not exist.
var ErrNotFound = errors.New("template not found")

// Template is one template's record.
type Template struct {
	Version     int    `json:"version"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Image is what the template boots: a catalog name or a recipe path.
	Image string `json:"image"`
	// ImageDigest is the built image's digest once image/ holds it.
	ImageDigest string   `json:"image_digest,omitempty"`
	Defaults    Defaults `json:"defaults"`
	// Snapshot describes snapshot/ when the template has one.
	Snapshot *SnapshotInfo `json:"snapshot,omitempty"`
	Created  time.Time     `json:"created"`
	Updated  time.Time     `json:"updated"`
	// Source is where it was pulled from (store address and tag) and
	// Digest the manifest digest it was pulled as or last pushed as.
	Source string `json:"source,omitempty"`
	Digest string `json:"digest,omitempty"`
	// SignedBy is the key ID whose signature was verified on pull.
	SignedBy string `json:"signed_by,omitempty"`

	// Dir is filled in when read, not stored.
	Dir string `json:"-"`
}

// Defaults are what `up --template` uses where no flag says otherwise.
type Defaults struct {
	Backend   string `json:"backend,omitempty" toml:"backend,omitempty"`
	CPUs      int    `json:"cpus,omitempty" toml:"cpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty" toml:"memory_mib,omitempty"`
	Network   string `json:"network,omitempty" toml:"network,omitempty"`
	// Egress is the policy preset the network is created with when
	// `up --template` finds it missing.
	Egress string `json:"egress,omitempty" toml:"egress,omitempty"`
	// Secrets name the secrets a VM of this template expects; `up` says
	// which are missing.
	Secrets []string `json:"secrets,omitempty" toml:"secrets,omitempty"`
	// Publish are -p specs.
	Publish []string `json:"publish,omitempty" toml:"publish,omitempty"`
}

// SnapshotInfo is what the record says of its snapshot.
type SnapshotInfo struct {
	Backend   string    `json:"backend"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	Network   string    `json:"network,omitempty"`
	Created   time.Time `json:"created"`
}

// Validate checks a record read from disk or a registry: it is untrusted
// input whose fields end up in paths and flags.
func (t *Template) Validate() error {
	if t.Version < 1 || t.Version > formatVersion {
		return fmt.Errorf("template format version %d, this mvmctl reads 1 to %d", t.Version, formatVersion)
	}
	if err := ValidateName(t.Name); err != nil {
		return err
	}
	if t.Image == "" {
		return fmt.Errorf("template %s: no image", t.Name)
	}
	if len(t.Image) > 4096 || strings.ContainsAny(t.Image, "\x00\n") {
		return fmt.Errorf("template %s: image %q is not a catalog name or recipe path", t.Name, t.Image)
	}
	d := t.Defaults
	if d.CPUs < 0 || d.CPUs > 256 {
		return fmt.Errorf("template %s: cpus %d out of range 1-256", t.Name, d.CPUs)
	}
	if d.MemoryMiB < 0 || d.MemoryMiB > 1<<20 {
		return fmt.Errorf("template %s: memory %d MiB out of range", t.Name, d.MemoryMiB)
	}
	for _, s := range []string{d.Backend, d.Network, d.Egress} {
		if len(s) > 64 || strings.ContainsAny(s, "\x00\n/ ") {
			return fmt.Errorf("template %s: invalid value %q in defaults", t.Name, s)
		}
	}
	if len(d.Secrets) > 64 || len(d.Publish) > 64 {
		return fmt.Errorf("template %s: too many secrets or published ports", t.Name)
	}
	for _, s := range d.Secrets {
		if err := ValidateName(s); err != nil {
			return fmt.Errorf("template %s: secret name: %w", t.Name, err)
		}
	}
	for _, p := range d.Publish {
		if p == "" || len(p) > 64 || strings.ContainsAny(p, "\x00\n ") {
			return fmt.Errorf("template %s: invalid published port %q", t.Name, p)
		}
	}
	if s := t.Snapshot; s != nil && (s.Backend == "" || s.CPUs < 1 || s.MemoryMiB < 1) {
		return fmt.Errorf("template %s: snapshot record is incomplete", t.Name)
	}
	return nil
}

// ValidateName checks a template name: the rules of VM names, since it
// names a directory too.
func ValidateName(name string) error {
	if err := store.ValidateName(name); err != nil {
		return fmt.Errorf("template name: %s", strings.TrimPrefix(err.Error(), "invalid VM name"))
	}
	return nil
}

// Decode parses and validates a record.
func Decode(b []byte) (*Template, error) {
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("template record is %d bytes, at most 1 MiB", len(b))
	}
	var t Template
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("template record: %w", err)
	}
	if dec.More() {
		return nil, errors.New("template record: trailing data")
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Store is the templates directory.
type Store struct{ dir string }

// NewStore returns the store rooted at dir (<share>/templates).
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Root is the templates directory.
func (s *Store) Root() string { return s.dir }

// Dir is one template's directory.
func (s *Store) Dir(name string) string { return filepath.Join(s.dir, name) }

// Lock takes a template's exclusive lock (builds, pulls, edits, deletes).
func (s *Store) Lock(name string) (func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	d := filepath.Join(s.dir, ".locks")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	l := flock.New(filepath.Join(d, name+".lock"))
	if err := l.Lock(); err != nil {
		return nil, fmt.Errorf("lock template %s: %w", name, err)
	}
	return func() { _ = l.Unlock() }, nil
}

// Exists says whether a template of that name exists.
func (s *Store) Exists(name string) bool {
	_, err := os.Stat(filepath.Join(s.Dir(name), RecordFile))
	return err == nil
}

// Get reads one template.
func (s *Store) Get(name string) (*Template, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(name), RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (see 'mvmctl template list')", ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	t, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(s.Dir(name), RecordFile), err)
	}
	if t.Name != name {
		return nil, fmt.Errorf("template %s: record names %q", name, t.Name)
	}
	t.Dir = s.Dir(name)
	return t, nil
}

// Put writes a record (creating its directory); callers hold the lock.
func (s *Store) Put(t *Template) error {
	if t.Version == 0 {
		t.Version = formatVersion
	}
	now := time.Now().UTC()
	if t.Created.IsZero() {
		t.Created = now
	}
	t.Updated = now
	if err := t.Validate(); err != nil {
		return err
	}
	dir := s.Dir(t.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	if err := store.WriteFileAtomic(filepath.Join(dir, RecordFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save template %s: %w", t.Name, err)
	}
	t.Dir = dir
	return nil
}

// List reads every template, sorted by name; unreadable ones are returned
// as errors beside the rest.
func (s *Store) List() ([]*Template, []error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	var out []*Template
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		t, err := s.Get(e.Name())
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

// Remove deletes a template's directory; callers hold the lock and have
// checked that no VM uses it.
func (s *Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	dir := s.Dir(name)
	// Rename first so a half-removed template never reads as one.
	tmp := filepath.Join(s.dir, ".trash-"+name+"-"+fmt.Sprint(time.Now().UnixNano()))
	if err := os.Rename(dir, tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return err
	}
	return os.RemoveAll(tmp)
}

// HasImage says whether the template holds image files of its own.
func (t *Template) HasImage() bool {
	_, err := os.Stat(filepath.Join(t.Dir, ImageDir, "manifest.json"))
	return err == nil
}

// SnapshotPath is the template's snapshot directory.
func (t *Template) SnapshotPath() string { return filepath.Join(t.Dir, SnapshotDir) }

// ImagePath is the template's image directory.
func (t *Template) ImagePath() string { return filepath.Join(t.Dir, ImageDir) }

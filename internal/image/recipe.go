package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/tomlx"
)

// maxRecipeSize bounds a recipe file; recipes are hand-written and small.
const maxRecipeSize = 1 << 20

// Kernel and rootfs sources a recipe may name.
const (
	KernelDebian = "debian" // a Debian cloud kernel + modules: installed, a package or a .deb
	KernelFile   = "file"   // a kernel image file; virtio drivers must be built in
	KernelNix    = "nix"    // the kernel in the rootfs flake's build output

	RootfsMinimal = "minimal" // static busybox + agent, no package manager
	RootfsDebian  = "debian"  // mmdebstrap of a suite with a package list
	RootfsOCI     = "oci"     // an OCI image: registry, Docker daemon, OCI layout or archive
	RootfsNix     = "nix"     // a Nix flake's build output (rootfs.flake)

	DefaultSuite = "bookworm"
)

// Recipe describes one image: where its kernel and root filesystem come from
// and what is added to them. See docs/recipes.md.
type Recipe struct {
	Name        string            `toml:"name" json:"name"`
	Description string            `toml:"description" json:"description,omitempty"`
	Tags        []string          `toml:"tags" json:"tags,omitempty"`
	Kernel      KernelSpec        `toml:"kernel" json:"kernel"`
	Rootfs      RootfsSpec        `toml:"rootfs" json:"rootfs"`
	Files       []FileSpec        `toml:"files" json:"files,omitempty"`
	Env         map[string]string `toml:"env" json:"env,omitempty"`
	Services    []ServiceSpec     `toml:"services" json:"services,omitempty"`
	Health      []HealthSpec      `toml:"health" json:"health,omitempty"`
	Access      AccessSpec        `toml:"access" json:"access"`
	Resources   ResourceSpec      `toml:"resources" json:"resources"`

	// origin is the file the recipe came from ("catalog:NAME" for built-ins);
	// base is the directory file sources are relative to ("" forbids them).
	origin string
	base   string
}

// KernelSpec picks the guest kernel.
type KernelSpec struct {
	Source string `toml:"source" json:"source"`
	Path   string `toml:"path" json:"path,omitempty"`
	// Package pins a Debian kernel package (debian only), fetched with
	// apt-get; Deb names a local .deb instead.
	Package string `toml:"package" json:"package,omitempty"`
	Deb     string `toml:"deb" json:"deb,omitempty"`
}

// RootfsSpec picks the root filesystem's base.
type RootfsSpec struct {
	Source   string   `toml:"source" json:"source"`
	Suite    string   `toml:"suite" json:"suite,omitempty"`
	Packages []string `toml:"packages" json:"packages,omitempty"`
	Image    string   `toml:"image" json:"image,omitempty"`
	Flake    string   `toml:"flake" json:"flake,omitempty"`
	FreeMiB  int64    `toml:"free_mib" json:"free_mib"`
}

// FileSpec adds one file to the root filesystem.
type FileSpec struct {
	Path    string `toml:"path" json:"path"`
	Content string `toml:"content" json:"content,omitempty"`
	Src     string `toml:"src" json:"src,omitempty"`
	Mode    Mode   `toml:"mode" json:"mode"`
}

// ServiceSpec is a long-running process the agent starts at boot.
type ServiceSpec struct {
	Name    string   `toml:"name" json:"name"`
	Command []string `toml:"command" json:"command"`
	User    string   `toml:"user" json:"user,omitempty"`
}

// HealthSpec is a command the agent runs periodically; exit 0 is healthy.
type HealthSpec struct {
	Name     string   `toml:"name" json:"name"`
	Command  []string `toml:"command" json:"command"`
	Interval Duration `toml:"interval" json:"interval"`
	Timeout  Duration `toml:"timeout" json:"timeout"`
}

// AccessSpec is the image's access policy.
type AccessSpec struct {
	Console bool `toml:"console" json:"console"`
}

// ResourceSpec are the image's default VM size.
type ResourceSpec struct {
	CPUs      int `toml:"cpus" json:"cpus"`
	MemoryMiB int `toml:"memory_mib" json:"memory_mib"`
}

// Mode is a file mode in octal: "0644", 0o644 or 644 all mean rw-r--r--
// (an integer's digits are read as octal, never as decimal 644).
type Mode struct {
	Perm uint32
	Set  bool
}

// UnmarshalText parses an octal mode.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(strings.TrimPrefix(string(b), "0o"), 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("mode %q: want an octal string such as \"0644\"", b)
	}
	*m = Mode{Perm: uint32(v), Set: true}
	return nil
}

// MarshalText renders the mode as four octal digits.
func (m Mode) MarshalText() ([]byte, error) { return fmt.Appendf(nil, "%04o", m.Perm), nil }

// Duration is a Go duration string in TOML ("5s", "1m30s").
type Duration time.Duration

// UnmarshalText parses a duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText renders the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Origin is where the recipe was loaded from.
func (r *Recipe) Origin() string { return r.origin }

// LoadRecipe reads and validates a recipe file. File sources (files.src) are
// resolved relative to the recipe's directory.
func LoadRecipe(path string) (*Recipe, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxRecipeSize+1)); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", path, err)
	}
	if buf.Len() > maxRecipeSize {
		return nil, fmt.Errorf("recipe %s: larger than %d bytes", path, maxRecipeSize)
	}
	return ParseRecipe(path, buf.Bytes(), filepath.Dir(abs))
}

// ParseRecipe decodes recipe bytes strictly: unknown keys and wrong types are
// errors naming file, line and key. name is used in messages only; base is
// the directory files.src is relative to ("" forbids files.src).
func ParseRecipe(name string, b []byte, base string) (*Recipe, error) {
	var r Recipe
	if err := tomlx.Decode(name, b, &r, "see docs/recipes.md for the recipe format"); err != nil {
		return nil, err
	}
	r.origin, r.base = name, base
	r.applyDefaults()
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &r, nil
}

func (r *Recipe) applyDefaults() {
	if r.Kernel.Source == "" {
		r.Kernel.Source = KernelDebian
	}
	if r.Rootfs.Source == "" {
		r.Rootfs.Source = RootfsMinimal
	}
	if r.Rootfs.Source == RootfsDebian && r.Rootfs.Suite == "" {
		r.Rootfs.Suite = DefaultSuite
	}
	if r.Rootfs.FreeMiB == 0 {
		r.Rootfs.FreeMiB = 256
	}
	for i := range r.Files {
		if !r.Files[i].Mode.Set {
			r.Files[i].Mode = Mode{Perm: 0o644, Set: true}
		}
	}
	for i := range r.Services {
		if r.Services[i].User == "" {
			r.Services[i].User = "root"
		}
	}
	for i := range r.Health {
		if r.Health[i].Interval == 0 {
			r.Health[i].Interval = Duration(10 * time.Second)
		}
		if r.Health[i].Timeout == 0 {
			r.Health[i].Timeout = Duration(5 * time.Second)
		}
	}
}

// canonical is the recipe's contribution to the image digest: its decoded
// form in a fixed JSON encoding (map keys sorted), so formatting and comment
// changes do not rebuild while any meaningful change does. Host paths of
// file sources are left out; their contents are digest inputs.
func (r *Recipe) canonical() []byte {
	c := *r
	c.Files = make([]FileSpec, len(r.Files))
	for i, f := range r.Files {
		if f.Src != "" {
			f.Src = "(input)"
		}
		c.Files[i] = f
	}
	if c.Kernel.Path != "" {
		c.Kernel.Path = "(input)"
	}
	if c.Kernel.Deb != "" {
		c.Kernel.Deb = "(input)"
	}
	b, err := json.Marshal(&c)
	if err != nil {
		panic(fmt.Sprintf("recipe %s: canonical encoding: %v", r.Name, err)) // all fields are plain data
	}
	return b
}

// srcPath resolves a file source relative to the recipe.
func (r *Recipe) srcPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(r.base, p)
}

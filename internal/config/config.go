// Package config reads the user's config.toml. Decoding is strict: an unknown
// key or a value of the wrong type is an error naming the file, line and key,
// never a silent fallback to defaults. Nothing here creates the file: it is
// written only by an explicit user action.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mvm-dev/mvm/internal/tomlx"
)

// Config is config.toml. Zero values mean "not set" so that precedence
// resolution can tell a user's choice from a default.
type Config struct {
	DefaultCPUs      int    `toml:"default_cpus" json:"default_cpus,omitempty"`
	DefaultMemoryMiB int    `toml:"default_memory_mib" json:"default_memory_mib,omitempty"`
	DefaultBackend   string `toml:"default_backend" json:"default_backend,omitempty"`
	DefaultImage     string `toml:"default_image" json:"default_image,omitempty"`
	// DefaultNetwork is the network `up` joins without --network ("none":
	// no NIC).
	DefaultNetwork string   `toml:"default_network" json:"default_network,omitempty"`
	BootTimeout    Duration `toml:"boot_timeout" json:"boot_timeout,omitempty"`
	StopTimeout    Duration `toml:"stop_timeout" json:"stop_timeout,omitempty"`
	// ConsoleIdleTimeout ends an unused console session (agent default 15m).
	ConsoleIdleTimeout Duration `toml:"console_idle_timeout" json:"console_idle_timeout,omitempty"`
	// Trust is the [trust] table: which template stores must serve signed
	// templates (see docs/signing.md).
	Trust TrustPolicy `toml:"trust,omitempty" json:"trust,omitzero"`
	// Update is the [update] table: where `mvmctl update` finds releases
	// and the key their checksums must be signed by.
	Update UpdateConfig `toml:"update,omitempty" json:"update,omitzero"`
}

// UpdateConfig is the [update] table.
type UpdateConfig struct {
	// URL is the release root (see internal/update).
	URL string `toml:"url,omitempty" json:"url,omitempty"`
	// Key is a public key file (mvmctl key export) releases are checked
	// against, instead of the key this build pins.
	Key string `toml:"key,omitempty" json:"key,omitempty"`
}

// Built-in defaults, the last step of every precedence chain.
const (
	BuiltinCPUs        = 1
	BuiltinMemoryMiB   = 256
	BuiltinImage       = "minimal"
	BuiltinBootTimeout = 3 * time.Minute
	BuiltinStopTimeout = 20 * time.Second
	// BuiltinConsoleIdle is the agent's own default (server.DefaultConsoleIdle;
	// a test there keeps the two equal).
	BuiltinConsoleIdle = 15 * time.Minute
)

// Duration is a time.Duration written as a Go duration string ("90s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. \"90s\" or \"2m\")", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Load reads path. A missing file is an empty config, not an error.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes config bytes; path is used in error messages only.
func Parse(path string, b []byte) (*Config, error) {
	var c Config
	if err := tomlx.Decode(path, b, &c, "see 'mvmctl config show' for the known keys"); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Validate checks value ranges.
func (c *Config) Validate() error {
	if c.DefaultCPUs < 0 || c.DefaultCPUs > 255 {
		return fmt.Errorf("default_cpus = %d: must be between 1 and 255", c.DefaultCPUs)
	}
	if c.DefaultMemoryMiB < 0 || (c.DefaultMemoryMiB > 0 && c.DefaultMemoryMiB < 64) {
		return fmt.Errorf("default_memory_mib = %d: must be at least 64", c.DefaultMemoryMiB)
	}
	return c.Trust.Validate()
}

// Encode renders c as TOML (only the keys that are set).
func (c *Config) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

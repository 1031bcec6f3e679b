package vm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"

	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/tomlx"
)

// VMConfig is a per-VM config file (`up --config FILE`). It sits between
// flags and the image recipe in precedence. Zero values mean "not set".
type VMConfig struct {
	Name      string `toml:"name"`
	Image     string `toml:"image"`
	Backend   string `toml:"backend"`
	CPUs      int    `toml:"cpus"`
	Memory    string `toml:"memory"`     // size string: "512M", "1G"
	MemoryMiB int    `toml:"memory_mib"` // or a plain MiB count
	Network   string `toml:"network"`

	// Path is the file the config was read from (for messages and records).
	Path string `toml:"-"`
	// memMiB is Memory or MemoryMiB, validated.
	memMiB int
}

// LoadVMConfig reads and checks a VM config file. Decoding is strict: an
// unknown key or a bad value is an error naming file:line and the key.
func LoadVMConfig(path string) (*VMConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read VM config: %w", err)
	}
	return ParseVMConfig(path, b)
}

// ParseVMConfig decodes VM config bytes; path is used in messages only.
func ParseVMConfig(path string, b []byte) (*VMConfig, error) {
	var c VMConfig
	if err := tomlx.Decode(path, b, &c, "known keys: name, image, backend, cpus, memory, memory_mib, network"); err != nil {
		return nil, err
	}
	c.Path = path
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("%s:%d: key %q: %s", path, lineOf(b, key), key, fmt.Sprintf(format, a...))
	}
	if c.Name != "" {
		if err := store.ValidateName(c.Name); err != nil {
			return nil, bad("name", "%v", err)
		}
	}
	if c.CPUs < 0 || c.CPUs > 255 {
		return nil, bad("cpus", "%d: must be between 1 and 255", c.CPUs)
	}
	switch {
	case c.Memory != "" && c.MemoryMiB != 0:
		return nil, bad("memory_mib", "set either memory or memory_mib, not both")
	case c.Memory != "":
		mib, err := ParseSize(c.Memory)
		if err != nil {
			return nil, bad("memory", "%v", err)
		}
		c.memMiB = mib
	case c.MemoryMiB != 0:
		if c.MemoryMiB < 64 || c.MemoryMiB > 1<<20 {
			return nil, bad("memory_mib", "%d: must be between 64 and 1048576", c.MemoryMiB)
		}
		c.memMiB = c.MemoryMiB
	}
	return &c, nil
}

// MemMiB returns the configured memory in MiB, 0 when unset.
func (c *VMConfig) MemMiB() int {
	if c == nil {
		return 0
	}
	return c.memMiB
}

// lineOf finds the 1-based line that assigns key at top level, or 0.
func lineOf(b []byte, key string) int {
	re := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if re.MatchString(sc.Text()) {
			return n
		}
	}
	return 0
}

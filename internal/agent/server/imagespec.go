package server

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ServiceSpec is one /etc/mvm/services.d/NAME.json (image.GuestService).
type ServiceSpec struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	User    string   `json:"user,omitempty"`
}

// CheckSpec is one /etc/mvm/health.d/NAME.json (image.GuestHealthCheck).
type CheckSpec struct {
	Name       string   `json:"name"`
	Command    []string `json:"command"`
	IntervalMS int64    `json:"interval_ms,omitempty"`
	TimeoutMS  int64    `json:"timeout_ms,omitempty"`
}

// Limits on the image's definitions: they come from the image, which the
// agent treats as untrusted input.
const (
	maxSpecFile  = 64 << 10
	maxSpecFiles = 256
	maxArgs      = 1024

	defaultCheckInterval = 10 * time.Second
	defaultCheckTimeout  = 10 * time.Second
	minCheckInterval     = 100 * time.Millisecond
)

// ParseService decodes and validates one service file.
func ParseService(b []byte) (ServiceSpec, error) {
	var s ServiceSpec
	if err := decodeArgs(b, &s); err != nil {
		return s, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return s, fmt.Errorf("empty file")
	}
	return s, validateSpec(s.Name, s.Command)
}

// ParseCheck decodes and validates one health check file.
func ParseCheck(b []byte) (CheckSpec, error) {
	var c CheckSpec
	if err := decodeArgs(b, &c); err != nil {
		return c, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return c, fmt.Errorf("empty file")
	}
	if c.IntervalMS < 0 || c.TimeoutMS < 0 {
		return c, fmt.Errorf("interval_ms and timeout_ms must not be negative")
	}
	return c, validateSpec(c.Name, c.Command)
}

func validateSpec(name string, argv []string) error {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, "/\x00\n") {
		return fmt.Errorf("invalid name %q", name)
	}
	if len(argv) == 0 || argv[0] == "" {
		return fmt.Errorf("%s: command is empty", name)
	}
	if len(argv) > maxArgs {
		return fmt.Errorf("%s: %d arguments, at most %d", name, len(argv), maxArgs)
	}
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("%s: command contains a NUL byte", name)
		}
	}
	return nil
}

func (c CheckSpec) interval() time.Duration {
	if c.IntervalMS == 0 {
		return defaultCheckInterval
	}
	return max(time.Duration(c.IntervalMS)*time.Millisecond, minCheckInterval)
}

func (c CheckSpec) timeout() time.Duration {
	if c.TimeoutMS == 0 {
		return defaultCheckTimeout
	}
	return time.Duration(c.TimeoutMS) * time.Millisecond
}

// LoadServices reads dir/*.json in file-name order. A missing directory is
// no services. One bad file fails the whole set: a half-started image would
// be harder to understand than a clear refusal.
func LoadServices(dir string) ([]ServiceSpec, error) {
	var out []ServiceSpec
	err := eachSpec(dir, func(name string, b []byte) error {
		s, err := ParseService(b)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// LoadChecks reads dir/*.json in file-name order.
func LoadChecks(dir string) ([]CheckSpec, error) {
	var out []CheckSpec
	err := eachSpec(dir, func(name string, b []byte) error {
		c, err := ParseCheck(b)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func eachSpec(dir string, fn func(name string, b []byte) error) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".json" && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) > maxSpecFiles {
		return fmt.Errorf("%s: %d files, at most %d", dir, len(names), maxSpecFiles)
	}
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(f, maxSpecFile+1))
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if len(b) > maxSpecFile {
			return fmt.Errorf("%s: larger than %d bytes", n, maxSpecFile)
		}
		if err := fn(n, b); err != nil {
			return err
		}
	}
	return nil
}

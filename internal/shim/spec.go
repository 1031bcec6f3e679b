//go:build linux

package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxSpecBytes bounds config.json and an exec's process spec: containerd
// writes them, but a bundle is a file anyone with access could edit.
const maxSpecBytes = 4 << 20

// spec is the part of an OCI runtime spec (config.json) the shim uses.
type spec struct {
	Process *process `json:"process"`
	Root    *struct {
		Path     string `json:"path"`
		Readonly bool   `json:"readonly"`
	} `json:"root"`
	Hostname string `json:"hostname"`
}

// process is an OCI process: the container's, or an exec's.
type process struct {
	Terminal bool     `json:"terminal"`
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	User     struct {
		UID uint32 `json:"uid"`
		GID uint32 `json:"gid"`
	} `json:"user"`
}

// loadSpec reads bundle/config.json.
func loadSpec(bundle string) (*spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSpecBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	if len(b) > maxSpecBytes {
		return nil, fmt.Errorf("OCI spec over %d bytes", maxSpecBytes)
	}
	return parseSpec(b)
}

func parseSpec(b []byte) (*spec, error) {
	var s spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("OCI spec: %w", err)
	}
	if s.Process == nil {
		return nil, errors.New("OCI spec: no process")
	}
	if err := s.Process.check(); err != nil {
		return nil, fmt.Errorf("OCI spec: %w", err)
	}
	return &s, nil
}

// parseProcess decodes an exec's process spec (JSON, as ctr and the CRI
// plugin send it).
func parseProcess(b []byte) (*process, error) {
	if len(b) > maxSpecBytes {
		return nil, fmt.Errorf("process spec over %d bytes", maxSpecBytes)
	}
	var p process
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("process spec: %w", err)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("process spec: %w", err)
	}
	return &p, nil
}

func (p *process) check() error {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return errors.New("process has no args")
	}
	if p.Cwd != "" && !filepath.IsAbs(p.Cwd) {
		return fmt.Errorf("cwd %q is not absolute", p.Cwd)
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("env entry %q is not KEY=VALUE", e)
		}
	}
	return nil
}

// user is the agent's uid:gid form.
func (p *process) user() string { return fmt.Sprintf("%d:%d", p.User.UID, p.User.GID) }

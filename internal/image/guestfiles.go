package image

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Paths inside the root filesystem that the agent reads at boot (see
// docs/recipes.md, "What the builder writes").
const (
	GuestAgentPath   = "/sbin/mvm-agent"
	GuestImageFile   = "/etc/mvm/image.json"
	GuestServicesDir = "/etc/mvm/services.d"
	GuestHealthDir   = "/etc/mvm/health.d"
)

// GuestImage is /etc/mvm/image.json.
type GuestImage struct {
	Name string   `json:"name"`
	Env  []string `json:"env,omitempty"` // KEY=VALUE, sorted; for every process the agent starts
}

// GuestService is one /etc/mvm/services.d/<name>.json. The agent starts
// services in file-name order and restarts them when they exit.
type GuestService struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	User    string   `json:"user"`
}

// GuestHealthCheck is one /etc/mvm/health.d/<name>.json.
type GuestHealthCheck struct {
	Name       string   `json:"name"`
	Command    []string `json:"command"`
	IntervalMS int64    `json:"interval_ms"`
	TimeoutMS  int64    `json:"timeout_ms"`
}

// addAgent installs the agent into a base that did not come with it.
func addAgent(s *stager, agent string) error {
	if err := s.put(GuestAgentPath, nil, agent, 0o755); err != nil {
		return err
	}
	// The agent mounts the config drive here; a missing mount point would
	// need a writable root at boot.
	_, err := s.mkdirAll("/mnt/config")
	return err
}

// addRecipeContent writes the recipe's files, image metadata, services and
// health checks into the staging tree.
func addRecipeContent(s *stager, r *Recipe, in *inputs) error {
	for i, f := range r.Files {
		if err := s.put(f.Path, []byte(f.Content), in.srcs[i], fs.FileMode(f.Mode.Perm)&fs.ModePerm|modeBits(f.Mode.Perm)); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
	}
	img := GuestImage{Name: r.Name, Env: mergeEnv(in.baseEnv, r.Env)}
	if err := putJSON(s, GuestImageFile, img); err != nil {
		return err
	}
	if _, err := s.mkdirAll(GuestServicesDir); err != nil {
		return err
	}
	if _, err := s.mkdirAll(GuestHealthDir); err != nil {
		return err
	}
	for _, sv := range r.Services {
		g := GuestService(sv)
		if err := putJSON(s, filepath.Join(GuestServicesDir, sv.Name+".json"), g); err != nil {
			return err
		}
	}
	for _, h := range r.Health {
		g := GuestHealthCheck{Name: h.Name, Command: h.Command,
			IntervalMS: int64(h.Interval) / 1e6, TimeoutMS: int64(h.Timeout) / 1e6}
		if err := putJSON(s, filepath.Join(GuestHealthDir, h.Name+".json"), g); err != nil {
			return err
		}
	}
	return nil
}

// modeBits maps the setuid/setgid/sticky bits of a Unix mode to fs.FileMode.
func modeBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

func putJSON(s *stager, p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	return s.put(p, append(b, '\n'), "", 0o644)
}

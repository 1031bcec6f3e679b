// Package paths resolves mvm's directories. Order for each root: MVM_*_DIR,
// then $XDG_*_HOME/mvm, then the XDG default under $HOME. A legacy ~/.mvm is
// used for every root when it exists and none of the XDG roots do.
package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Dirs holds the resolved roots.
type Dirs struct {
	Cache  string `json:"cache"`  // build artifacts, images
	Config string `json:"config"` // config.toml, host keys
	State  string `json:"state"`  // VM records and runtime files, logs, audit
	Share  string `json:"share"`  // templates, networks
	Legacy bool   `json:"legacy"` // true when ~/.mvm is in use
}

type root struct {
	env, xdgEnv, xdgDefault string
}

var (
	cacheRoot  = root{"MVM_CACHE_DIR", "XDG_CACHE_HOME", ".cache"}
	configRoot = root{"MVM_CONFIG_DIR", "XDG_CONFIG_HOME", ".config"}
	stateRoot  = root{"MVM_STATE_DIR", "XDG_STATE_HOME", ".local/state"}
	shareRoot  = root{"MVM_SHARE_DIR", "XDG_DATA_HOME", ".local/share"}
)

// Resolve computes the roots from the environment. It creates nothing.
func Resolve() (Dirs, error) {
	return resolve(os.Getenv, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
}

func resolve(getenv func(string) string, exists func(string) bool) (Dirs, error) {
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil || h == "" {
			return Dirs{}, errors.New("cannot find home directory: set HOME or MVM_*_DIR")
		}
		home = h
	}
	pick := func(r root) (string, bool, error) {
		if v := getenv(r.env); v != "" {
			if !filepath.IsAbs(v) {
				return "", false, fmt.Errorf("%s=%q must be an absolute path", r.env, v)
			}
			return filepath.Clean(v), true, nil
		}
		if v := getenv(r.xdgEnv); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "mvm"), true, nil
		}
		return filepath.Join(home, r.xdgDefault, "mvm"), false, nil
	}
	var d Dirs
	var explicit [4]bool
	var err error
	for i, p := range []struct {
		r   root
		dst *string
	}{{cacheRoot, &d.Cache}, {configRoot, &d.Config}, {stateRoot, &d.State}, {shareRoot, &d.Share}} {
		if *p.dst, explicit[i], err = pick(p.r); err != nil {
			return Dirs{}, err
		}
	}
	legacy := filepath.Join(home, ".mvm")
	if exists(legacy) && !exists(d.Cache) && !exists(d.Config) && !exists(d.State) && !exists(d.Share) {
		d.Legacy = true
		sub := []string{"cache", "", "state", "share"}
		dsts := []*string{&d.Cache, &d.Config, &d.State, &d.Share}
		for i, dst := range dsts {
			if !explicit[i] {
				*dst = filepath.Join(legacy, sub[i])
			}
		}
	}
	return d, nil
}

// VMsDir holds one directory per VM.
func (d Dirs) VMsDir() string { return filepath.Join(d.State, "vms") }

// VMDir is the directory of one VM.
func (d Dirs) VMDir(name string) string { return filepath.Join(d.VMsDir(), name) }

// ImagesDir holds content-addressed built images.
func (d Dirs) ImagesDir() string { return filepath.Join(d.Cache, "images") }

// ConfigFile is the user's config.toml.
func (d Dirs) ConfigFile() string { return filepath.Join(d.Config, "config.toml") }

// LogDir holds logs and the audit trail.
func (d Dirs) LogDir() string { return filepath.Join(d.State, "log") }

// Package vm implements the lifecycle verbs (up, exec, down, rm, ls, logs) on
// top of the image builder, a backend and the guest agent. The CLI only parses
// flags and calls one function here.
package vm

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
)

// Manager runs lifecycle verbs for one user's VMs.
type Manager struct {
	Dirs   paths.Dirs
	Config *config.Config
	Store  *store.Store
	Log    *slog.Logger
	// Mvmctl is the mvmctl executable that background helpers (a
	// network's DNS server, a pool's refiller) run as; "" means this
	// process's own executable, which is mvmctl unless mvm is embedded
	// (pkg/mvm sets it).
	Mvmctl string
	nets   *network.Manager
}

// mvmctl is the executable to start helper commands with.
func (m *Manager) mvmctl() (string, error) {
	if m.Mvmctl != "" {
		return m.Mvmctl, nil
	}
	return os.Executable()
}

// New builds a Manager from resolved directories and the user's config.
func New(dirs paths.Dirs, cfg *config.Config, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{Dirs: dirs, Config: cfg, Store: store.New(dirs.VMsDir()), Log: log}
}

// Files inside a VM directory that the vm package owns. Backends own the rest.
const (
	serialLogFile   = "serial.log"
	configDriveFile = "config.img"
)

// SerialLog is the guest console log of a VM.
func (m *Manager) SerialLog(name string) string {
	return filepath.Join(m.Store.Dir(name), serialLogFile)
}

// handle opens the backend handle for a record.
func (m *Manager) handle(rec *store.Record) (backend.Handle, error) {
	b, err := backend.Get(rec.Backend)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", rec.Name, err)
	}
	h, err := b.Open(rec.Dir)
	if err != nil {
		return nil, fmt.Errorf("open VM %s: %w", rec.Name, err)
	}
	return h, nil
}

// agentClient (keys.go) returns the authenticated agent client of a VM.

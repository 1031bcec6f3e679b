package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Files in the VM directory owned by this backend.
const (
	stateFile  = "backend.json"
	qmpSock    = "qmp.sock"
	serialSock = "serial-agent.sock" // QEMU's chardev for the agent port
	qemuLog    = "qemu.log"
	qemuPid    = "qemu.pid"
	memFile    = "mem" // guest RAM of a VM started here (memory-backend-file)
)

// record is what a fresh process needs to rebuild a Handle from the VM dir.
type record struct {
	Backend   string   `json:"backend"`
	Transport string   `json:"transport"`
	CID       uint32   `json:"cid,omitempty"`
	Accel     string   `json:"accel"`
	Argv      []string `json:"argv"`
	// Launch is what Argv was built from; Snapshot needs it to restore the
	// same machine elsewhere. Records written before snapshots lack it.
	Launch *launch `json:"launch,omitempty"`
	// Snapshot is the directory the VM was restored from, if any.
	Snapshot string `json:"snapshot,omitempty"`
}

func writeRecord(dir string, r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func readRecord(dir string) (record, error) {
	var r record
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", stateFile, err)
	}
	if r.Backend != Name {
		return r, fmt.Errorf("%s names backend %q, not %q", stateFile, r.Backend, Name)
	}
	return r, nil
}

package docker

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Files and directories in the VM directory owned by this backend, and where
// the container sees them.
const (
	stateFile = "backend.json"
	runDir    = "run"    // rw at GuestRunDir: agent socket, console log
	configDir = "config" // at GuestConfigDir: mvm.json, deleted by the agent once read

	GuestRunDir    = "/run/mvm"
	GuestConfigDir = "/mnt/config"
	// GuestSocket is the agent's socket inside the container.
	GuestSocket = GuestRunDir + "/agent.sock"
	// GuestConsole is where the agent writes its console lines.
	GuestConsole = GuestRunDir + "/console.log"

	agentSock  = "agent.sock"
	consoleLog = "console.log"
)

// record is what a fresh process needs to rebuild a Handle from the VM dir.
// Containers are addressed by name, which is known before the container
// exists, so a crash between create and the record update is still
// recoverable.
type record struct {
	Backend   string `json:"backend"`
	Container string `json:"container"`    // name
	ID        string `json:"id,omitempty"` // set once created
	Image     string `json:"image"`
	Socket    string `json:"engine_socket"`
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
	if r.Container == "" {
		return r, fmt.Errorf("%s names no container", stateFile)
	}
	return r, nil
}

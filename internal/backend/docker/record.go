package docker

import (
	"fmt"

	"github.com/mvm-dev/mvm/internal/backend"
)

// Files and directories in the VM directory owned by this backend, and where
// the container sees them.
const (
	stateFile = backend.RecordFile
	runDir    = "run" // rw at GuestRunDir: agent socket, console log
	// legacyConfigDir is the config directory older versions mounted at
	// GuestConfigDir and wrote again on every start; now each start mounts
	// a new one under configParent (configdir.go), and this one is removed.
	legacyConfigDir = "config"

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
	// Network is the Docker network the container joined; empty: none.
	Network string `json:"network,omitempty"`
}

func writeRecord(dir string, r record) error { return backend.SaveRecord(dir, r) }

func readRecord(dir string) (record, error) {
	var r record
	if err := backend.LoadRecord(dir, Name, &r); err != nil {
		return r, err
	}
	if r.Container == "" {
		return r, fmt.Errorf("%s names no container", stateFile)
	}
	return r, nil
}

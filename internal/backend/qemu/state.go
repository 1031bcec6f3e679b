package qemu

import "github.com/mvm-dev/mvm/internal/backend"

// Files in the VM directory owned by this backend.
const (
	stateFile  = backend.RecordFile
	qmpSock    = "qmp.sock"
	serialSock = "serial-agent.sock" // QEMU's chardev for the agent port
	// consoleSock is QEMU's chardev for the guest console; the supervisor
	// copies it into the VM's serial log, rotating it.
	consoleSock = "console.sock"
	qemuLog     = "qemu.log"
	qemuPid     = "qemu.pid"
	memFile     = "mem" // guest RAM of a VM started here (memory-backend-file)
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
	// Publish is what the supervisor forwards to the guest.
	Publish []backend.Publish `json:"publish,omitempty"`
	// RelayReady: the supervisor's agent relay announces each connection
	// once the guest is reached (supervisor.Config.AgentReady); supervisors
	// started before it existed do not.
	RelayReady bool `json:"relay_ready,omitempty"`
}

func writeRecord(dir string, r record) error { return backend.SaveRecord(dir, r) }

func readRecord(dir string) (record, error) {
	var r record
	if err := backend.LoadRecord(dir, Name, &r); err != nil {
		return r, err
	}
	return r, nil
}

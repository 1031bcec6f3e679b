package firecracker

import (
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/backend"
)

// Files in the VM directory owned by this backend.
const (
	apiSock   = "fc.sock"
	vsockSock = "v.sock"
	fcLog     = "firecracker.log"
	vmlinux   = "vmlinux"
)

// guestCID is the guest's vsock CID. Firecracker's vsock is per process
// (hybrid, over unix sockets), so every VM can use the same one.
const guestCID = 3

// record is what a fresh process needs to rebuild a Handle.
type record struct {
	Backend string         `json:"backend"`
	Binary  string         `json:"binary"`
	Version string         `json:"version"`
	Argv    []string       `json:"argv"`
	Disks   []backend.Disk `json:"disks"`
	// AgentPort is the guest's vsock port of the agent.
	AgentPort uint32 `json:"agent_port"`
	// NICs are the Firecracker iface ids, in order (snapshot overrides
	// name them).
	NICs []string `json:"nics,omitempty"`
	// CPUs and MemoryMiB are the machine's shape.
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	// Root is Firecracker's working directory and "/": the VM directory,
	// or the jail root. Its sockets and the files it opens live there.
	Root string `json:"root,omitempty"`
	// Jail is how it is jailed; nil: Unjailed says why not.
	Jail     *jail  `json:"jail,omitempty"`
	Unjailed string `json:"unjailed,omitempty"`
	// DriveNames are the paths Firecracker opens each drive by (id → path).
	DriveNames map[string]string `json:"drive_names,omitempty"`
	// StandIn marks the test stand-in VMM (its --version says so).
	StandIn bool `json:"stand_in,omitempty"`
	// Snapshot is the directory the VM was restored from: its memory
	// file is mapped for the VM's whole life.
	Snapshot string `json:"snapshot,omitempty"`
}

func (h *Handle) path(f string) string { return filepath.Join(h.dir, f) }

func writeRecord(dir string, r record) error { return backend.SaveRecord(dir, r) }

func readRecord(dir string) (record, error) {
	var r record
	return r, backend.LoadRecord(dir, Name, &r)
}

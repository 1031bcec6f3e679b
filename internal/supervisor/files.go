package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files inside the VM directory.
const (
	ConfigFile = "supervisor.json" // written by Launch
	PidsFile   = "pids.json"       // supervisor and QEMU identities
	ExitFile   = "exit.json"       // QEMU's exit status
	LogFile    = "supervisor.log"
	AgentSock  = "agent.sock" // relayed agent connections (virtio-serial transport)
)

// Config is what Launch hands the supervisor, through ConfigFile rather than argv.
type Config struct {
	Argv       []string `json:"argv"`        // VMM command line, argv[0] is the binary
	VMMLog     string   `json:"vmm_log"`     // VMM stdout+stderr
	QMPSocket  string   `json:"qmp_socket"`  // used to ask QEMU to quit
	SerialSock string   `json:"serial_sock"` // chardev socket of the agent port; empty: no relay
	AgentSock  string   `json:"agent_sock"`  // where host connections are accepted
	// AgentReady makes the relay write ReadyByte to a host connection once
	// it is joined to the guest agent (AwaitReady reads it).
	AgentReady bool `json:"agent_ready,omitempty"`
	// ConsoleSock is the VMM's guest console chardev (a unix socket server
	// that waits for us before the guest runs); its output is copied into
	// ConsoleLog, rotated at ConsoleMax bytes (0: DefaultConsoleMax) with one
	// old generation kept. Empty: the VMM handles the console itself.
	ConsoleSock string `json:"console_sock,omitempty"`
	ConsoleLog  string `json:"console_log,omitempty"`
	ConsoleMax  int64  `json:"console_max,omitempty"`
	// Listen lists unix socket paths the supervisor binds before it starts
	// the VMM and hands it as listening descriptors: the first as fd
	// FirstListenFD, the next one above, and so on. Our own connections to
	// them are queued at once, so nothing polls for the VMM to create them.
	Listen []string `json:"listen,omitempty"`
	// Remove lists files the VMM alone uses (its guest RAM file), deleted
	// once it has exited so a stopped VM does not keep them on disk.
	Remove []string `json:"remove,omitempty"`
	// Publish lists host ports forwarded to the guest while the VM runs.
	Publish []Publish `json:"publish,omitempty"`
	// VMMGuard is set for a VMM that changes its credentials (QEMU with
	// -runas), which clears the parent-death signal that kills it with the
	// supervisor: a guard process does that instead (guard.go).
	VMMGuard bool `json:"vmm_guard,omitempty"`
	// Helpers run beside the VMM (helpers.go).
	Helpers []Helper `json:"helpers,omitempty"`
}

// Publish is one host listener proxied to an address of the guest (bridged
// networks, where the host can reach the guest's IP).
type Publish struct {
	Proto  string `json:"proto"`  // "tcp" or "udp"
	Listen string `json:"listen"` // host "ip:port"
	Target string `json:"target"` // guest "ip:port"
}

// FirstListenFD is the descriptor number of Config.Listen[0] in the VMM.
const FirstListenFD = 3

// Pids records who runs the VM.
type Pids struct {
	Supervisor Proc `json:"supervisor"`
	VMM        Proc `json:"vmm"`
}

// Exit records how the VMM ended.
type Exit struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"` // the VMM could not be started
	Time   time.Time `json:"time"`
}

// ReadPids loads PidsFile from dir.
func ReadPids(dir string) (Pids, error) {
	var p Pids
	return p, readJSON(filepath.Join(dir, PidsFile), &p)
}

// ReadExit loads ExitFile from dir.
func ReadExit(dir string) (Exit, error) {
	var e Exit
	return e, readJSON(filepath.Join(dir, ExitFile), &e)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path atomically so readers never see half a file.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

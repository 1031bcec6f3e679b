package proto

// Messages of the v1 operations beyond exec/health/shutdown: console,
// forward, copy-in/copy-out and health checks. See docs/agent-protocol.md.

// TDone ends a streaming operation that is not a process (copy-in,
// copy-out): its JSON payload is the operation's final result.
const TDone Type = 0x23

func init() { typeNames[TDone] = "done" }

// ConsoleRequest opens the VM's interactive console: a login shell on a PTY.
type ConsoleRequest struct {
	// Command replaces the shell (argv, no shell parsing); empty = the
	// image's shell as a login shell.
	Command []string `json:"command,omitempty"`
	Cols    uint16   `json:"cols,omitempty"`
	Rows    uint16   `json:"rows,omitempty"`
	Term    string   `json:"term,omitempty"` // TERM for the shell; default xterm-256color
	// IdleTimeoutMS ends the session when neither side sent anything for
	// that long; 0 = the agent's default (15 min), negative = never.
	IdleTimeoutMS int64 `json:"idle_timeout_ms,omitempty"`
}

// ForwardRequest connects the stream to a TCP port inside the guest. After
// the Response the connection carries TData/TDataEOF frames both ways.
type ForwardRequest struct {
	Port uint16 `json:"port"`
	Host string `json:"host,omitempty"` // default 127.0.0.1; must be a loopback address
}

// CopyRequest names the guest side of a copy. copy-in: the client streams a
// tar archive (TData..., TDataEOF) that is extracted under Path; copy-out:
// the agent streams a tar of Path.
type CopyRequest struct {
	Path string `json:"path"`
	// User owns extracted files and is who reads/writes (default: root).
	User string `json:"user,omitempty"`
}

// CopyResult is the TDone payload of copy-in and copy-out.
type CopyResult struct {
	Files int   `json:"files"` // regular files, directories and links
	Bytes int64 `json:"bytes"` // file content bytes
}

// HealthRequest is the optional argument of OpHealth.
type HealthRequest struct {
	// RunChecks runs every health check now and waits for the results
	// instead of reporting the latest periodic run.
	RunChecks bool `json:"run_checks,omitempty"`
}

// CheckResult is the latest run of one image health check.
type CheckResult struct {
	Name       string `json:"name"`
	OK         bool   `json:"ok"`
	Detail     string `json:"detail,omitempty"` // "exit 1: <output tail>", "timed out after 2s"
	DurationMS int64  `json:"duration_ms"`
	Ran        bool   `json:"ran"` // false: not run yet
}

// ServiceStatus is one image service as the agent supervises it.
type ServiceStatus struct {
	Name     string `json:"name"`
	Running  bool   `json:"running"`
	Pid      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts"`
	Detail   string `json:"detail,omitempty"` // last exit or start error
}

package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Hello opens every connection. The client names the range of versions it speaks;
// the server picks the highest both know or answers TError with CodeVersion.
type Hello struct {
	Version    int `json:"version"`
	MinVersion int `json:"min_version"`
}

// HelloAck carries the version the server chose.
type HelloAck struct {
	Version int    `json:"version"`
	Agent   string `json:"agent,omitempty"` // agent build version, informational
}

// Operations a Request may name.
const (
	OpExec     = "exec"
	OpHealth   = "health"
	OpShutdown = "shutdown"
	OpConsole  = "console"
	OpForward  = "forward"
	OpCopyIn   = "copy-in"
	OpCopyOut  = "copy-out"
	OpTimeSync = "time-sync"
	OpDiff     = "diff"
	OpSecrets  = "secrets" // secrets.go
)

// Request is the single request of a connection. Args holds the operation's
// own message (ExecRequest, ShutdownRequest, ...).
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response acknowledges a Request. For streaming operations it is sent once
// the operation has started (e.g. the process was spawned); Result carries
// the answer of one-shot operations.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
}

// ExecRequest runs a process.
type ExecRequest struct {
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"` // KEY=VALUE, added to the agent's base environment
	Cwd       string   `json:"cwd,omitempty"`
	User      string   `json:"user,omitempty"` // name or uid[:gid]; empty = agent's user
	TTY       bool     `json:"tty,omitempty"`
	Cols      uint16   `json:"cols,omitempty"`
	Rows      uint16   `json:"rows,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"` // 0 = none; process group killed at expiry
	Stdin     bool     `json:"stdin,omitempty"`      // false: stdin is /dev/null
	// Rootfs runs the process chrooted into another root (a container's):
	// "LABEL=NAME" is an attached ext4 disk with that volume label, which
	// the agent mounts (with /proc, /sys and /dev inside) on first use; an
	// absolute path is a directory already in the guest. Cwd, the program
	// lookup and User's passwd/group files are then inside that root.
	Rootfs string `json:"rootfs,omitempty"`
}

// Exit ends an exec or console stream.
type Exit struct {
	Code     int    `json:"code"`                // exit status, or 128+signal when killed
	Signal   string `json:"signal,omitempty"`    // e.g. "TERM" when killed by a signal
	TimedOut bool   `json:"timed_out,omitempty"` // killed because TimeoutMS passed
	// IdleTimeout: a console session ended because nobody typed or read.
	IdleTimeout bool `json:"idle_timeout,omitempty"`
}

// Signal asks the agent to deliver a signal to the process group.
type Signal struct {
	Signal int `json:"signal"`
}

// Resize changes a PTY's window size.
type Resize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// ShutdownRequest powers the guest off (or reboots it).
type ShutdownRequest struct {
	Reboot bool `json:"reboot,omitempty"`
}

// Stage is one named step of guest readiness.
type Stage struct {
	Name   string `json:"name"`
	Done   bool   `json:"done"`
	Detail string `json:"detail,omitempty"`
}

// Standard stage names, in boot order.
const (
	StageKernel   = "kernel"
	StageRoot     = "root-mounted"
	StageConfig   = "config-drive"
	StageNetwork  = "network"
	StageServices = "services"
	StageHealth   = "health-checks"
)

// HealthResult answers OpHealth.
type HealthResult struct {
	Ready    bool    `json:"ready"`
	Stages   []Stage `json:"stages"`
	Hostname string  `json:"hostname,omitempty"`
	Kernel   string  `json:"kernel,omitempty"`
	UptimeMS int64   `json:"uptime_ms,omitempty"`
	// Checks are the image's health checks (/etc/mvm/health.d), latest run.
	Checks []CheckResult `json:"checks,omitempty"`
	// Services are the image's services (/etc/mvm/services.d).
	Services []ServiceStatus `json:"services,omitempty"`
}

// Error codes carried in TError frames.
const (
	CodeBadRequest  = "bad-request"
	CodeVersion     = "unsupported-version"
	CodeUnknownOp   = "unknown-op"
	CodeNotFound    = "not-found"
	CodeDenied      = "denied"
	CodeBusy        = "busy"
	CodeInternal    = "internal"
	CodeUnavailable = "unavailable"
)

// Error is a typed failure. It implements error so handlers can return it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError extracts an *Error from err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

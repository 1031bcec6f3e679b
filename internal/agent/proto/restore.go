package proto

import (
	"fmt"
	"regexp"
)

// OpPostRestore re-provisions a guest that was just restored from a
// snapshot: every clone wakes with the saved clock, the saved RNG state and
// the saved hostname, so the host sends the present time, fresh entropy and
// the clone's own name. The answer comes after all of it was applied.
const OpPostRestore = "post-restore"

// MaxPostRestoreEntropy bounds PostRestoreRequest.Entropy.
const MaxPostRestoreEntropy = 4096

// PostRestoreRequest is OpPostRestore's argument. Zero fields are skipped.
type PostRestoreRequest struct {
	UnixNano int64  `json:"unix_nano,omitempty"` // host wall clock when sent
	Hostname string `json:"hostname,omitempty"`
	Entropy  []byte `json:"entropy,omitempty"` // credited to the guest's pool, then the CRNG is reseeded
}

// PostRestoreResult says what the agent applied.
type PostRestoreResult struct {
	ClockStepMS   int64  `json:"clock_step_ms"` // how far the guest clock moved
	EntropyBytes  int    `json:"entropy_bytes"`
	Reseeded      bool   `json:"reseeded"`
	Hostname      string `json:"hostname"`
	AgentUnixNano int64  `json:"agent_unix_nano"` // guest clock after the step
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks a request from the wire.
func (r *PostRestoreRequest) Validate() error {
	if r.UnixNano < 0 {
		return fmt.Errorf("unix_nano %d is negative", r.UnixNano)
	}
	if r.Hostname != "" && !hostnameRE.MatchString(r.Hostname) {
		return fmt.Errorf("hostname %q: use 1-63 characters of a-z, 0-9 and '-'", r.Hostname)
	}
	if len(r.Entropy) > MaxPostRestoreEntropy {
		return fmt.Errorf("entropy: %d bytes, at most %d", len(r.Entropy), MaxPostRestoreEntropy)
	}
	return nil
}

// ParsePostRestore decodes and validates OpPostRestore's args strictly.
func ParsePostRestore(b []byte) (PostRestoreRequest, error) {
	var r PostRestoreRequest
	if len(b) == 0 {
		return r, nil
	}
	if err := decodeStrict(b, &r); err != nil {
		return r, fmt.Errorf("post-restore args: %w", err)
	}
	return r, r.Validate()
}

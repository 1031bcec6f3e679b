package proto

import (
	"fmt"
	"regexp"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// OpPostRestore re-provisions a guest that was just restored from a
// snapshot: every clone wakes with the saved clock, the saved RNG state, the
// saved hostname and the saved network (address, MAC, resolv.conf, hosts),
// so the host sends the present time, fresh entropy, the clone's own name
// and its own network. The answer comes after all of it was applied.
const OpPostRestore = "post-restore"

// MaxPostRestoreEntropy bounds PostRestoreRequest.Entropy.
const MaxPostRestoreEntropy = 4096

// PostRestoreRequest is OpPostRestore's argument. Zero fields are skipped.
type PostRestoreRequest struct {
	UnixNano int64  `json:"unix_nano,omitempty"` // host wall clock when sent
	Hostname string `json:"hostname,omitempty"`
	Entropy  []byte `json:"entropy,omitempty"` // credited to the guest's pool, then the CRNG is reseeded
	// Network replaces the parent's NIC config, resolv.conf and hosts; nil
	// leaves the network alone (a VM without a NIC).
	Network *guestcfg.Network `json:"network,omitempty"`
	// HostPublicKey and GuestPrivateKey (auth text forms), given together,
	// replace the agent's keys for every later connection: a clone stops
	// sharing its parent's key and trusts this host's key from here on
	// (a template carries a bootstrap key from the host that built it).
	HostPublicKey   string `json:"host_public_key,omitempty"`
	GuestPrivateKey string `json:"guest_private_key,omitempty"`
}

// PostRestoreResult says what the agent applied.
type PostRestoreResult struct {
	ClockStepMS   int64  `json:"clock_step_ms"` // how far the guest clock moved
	EntropyBytes  int    `json:"entropy_bytes"`
	Reseeded      bool   `json:"reseeded"`
	Hostname      string `json:"hostname"`
	AgentUnixNano int64  `json:"agent_unix_nano"` // guest clock after the step
	// Network summarises the applied network ("eth0 10.88.0.5/24 via
	// 10.88.0.1 mtu 1500"); empty when the request had none.
	Network string `json:"network,omitempty"`
	// Rekeyed says the agent took the request's keys.
	Rekeyed bool `json:"rekeyed,omitempty"`
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
	if (r.HostPublicKey == "") != (r.GuestPrivateKey == "") {
		return fmt.Errorf("host_public_key and guest_private_key come together or not at all")
	}
	if len(r.HostPublicKey) > 256 || len(r.GuestPrivateKey) > 256 {
		return fmt.Errorf("agent keys are too long")
	}
	return r.Network.Validate() // nil-safe; its errors say "network: ..."
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

package auth

import (
	"errors"
	"fmt"
	"strings"
)

// ErrKeyMismatch matches (errors.Is) every refusal caused by a peer key that
// is not pinned, whichever side noticed it.
var ErrKeyMismatch = errors.New("peer key is not pinned")

// KeyMismatchError is returned by the side that saw an unpinned peer key.
type KeyMismatchError struct {
	Peer   string   // "host" or "guest": whose key was wrong
	Got    string   // fingerprint of the presented key
	Pinned []string // fingerprints of the accepted keys
}

func (e *KeyMismatchError) Error() string {
	pinned := strings.Join(e.Pinned, ", ")
	if e.Peer == roleGuest {
		return fmt.Sprintf("guest key %s does not match the key pinned for this VM (%s)", e.Got, pinned)
	}
	return fmt.Sprintf("host key %s is not the host key this VM trusts (%s)", e.Got, pinned)
}

// Is makes errors.Is(err, ErrKeyMismatch) work.
func (e *KeyMismatchError) Is(target error) bool { return target == ErrKeyMismatch }

// RejectedError is what the side whose key was refused sees: the peer ended
// the handshake with a TLS alert. The host learns it on its first read,
// because a TLS 1.3 client finishes before the server has judged it.
type RejectedError struct {
	Peer  string // who refused: "host" or "guest"
	Alert error  // the remote alert, e.g. "remote error: tls: bad certificate"
}

func (e *RejectedError) Error() string {
	if e.Peer == roleGuest {
		return fmt.Sprintf("the guest refused our host key or protocol (%v): the VM trusts a different host key (another user's, or an older one) or is not the VM pinned for this name", e.Alert)
	}
	return fmt.Sprintf("the host refused this guest's key or protocol (%v)", e.Alert)
}

func (e *RejectedError) Unwrap() error { return e.Alert }

// Is makes errors.Is(err, ErrKeyMismatch) true for a refusal of our key.
func (e *RejectedError) Is(target error) bool {
	return target == ErrKeyMismatch && strings.Contains(e.Alert.Error(), "bad certificate")
}

// ProtocolError reports a peer that did not negotiate ALPN.
type ProtocolError struct {
	Peer string
	Got  string // negotiated protocol, "" if none
}

func (e *ProtocolError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("%s negotiated no application protocol, want %q (not an mvm agent peer, or a too old one)", e.Peer, ALPN)
	}
	return fmt.Sprintf("%s negotiated protocol %q, want %q", e.Peer, e.Got, ALPN)
}

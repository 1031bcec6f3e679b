package guestinit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// ErrNoKeys means the config carries no agent keys. The agent then serves
// nobody: there is no unauthenticated mode.
var ErrNoKeys = errors.New("the guest config has no agent keys (host_public_key, guest_private_key); the agent never serves unauthenticated connections")

// ServerAuth builds the wrap that authenticates every connection with the
// keys from the config drive: TLS 1.3, our guest key, and only the host key
// the drive names (internal/agent/auth). Set it as server.Config.Wrap.
func ServerAuth(cfg *guestcfg.Config) (func(net.Conn) (net.Conn, error), error) {
	k, err := NewKeys(cfg)
	if err != nil {
		return nil, err
	}
	return k.Wrap, nil
}

// Keys holds the agent's current keys; Rekey swaps them for connections
// accepted afterwards (server.Config.Rekey, from post-restore).
type Keys struct{ tc atomic.Pointer[tls.Config] }

// NewKeys reads the keys from the config drive.
func NewKeys(cfg *guestcfg.Config) (*Keys, error) {
	if cfg == nil || !cfg.HasKeys() {
		return nil, ErrNoKeys
	}
	k := &Keys{}
	if err := k.Rekey(cfg.HostPublicKey, cfg.GuestPrivateKey); err != nil {
		return nil, fmt.Errorf("guest config: %w", err)
	}
	return k, nil
}

// Rekey replaces the keys; an invalid pair changes nothing.
func (k *Keys) Rekey(hostPublicKey, guestPrivateKey string) error {
	guestKey, err := auth.ParsePrivateKey(guestPrivateKey)
	if err != nil {
		return fmt.Errorf("guest_private_key: %w", err)
	}
	hostPub, err := auth.ParsePublicKey(hostPublicKey)
	if err != nil {
		return fmt.Errorf("host_public_key: %w", err)
	}
	tc, err := auth.ServerConfig(guestKey, hostPub)
	if err != nil {
		return err
	}
	k.tc.Store(tc)
	return nil
}

// Wrap authenticates one connection with the current keys.
func (k *Keys) Wrap(conn net.Conn) (net.Conn, error) { return auth.ServerWrap(k.tc.Load())(conn) }

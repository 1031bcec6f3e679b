package guestinit

import (
	"errors"
	"fmt"
	"net"

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
	if cfg == nil || !cfg.HasKeys() {
		return nil, ErrNoKeys
	}
	guestKey, err := auth.ParsePrivateKey(cfg.GuestPrivateKey)
	if err != nil {
		return nil, fmt.Errorf("guest config guest_private_key: %w", err)
	}
	hostPub, err := auth.ParsePublicKey(cfg.HostPublicKey)
	if err != nil {
		return nil, fmt.Errorf("guest config host_public_key: %w", err)
	}
	tc, err := auth.ServerConfig(guestKey, hostPub)
	if err != nil {
		return nil, err
	}
	return auth.ServerWrap(tc), nil
}

package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// DefaultHandshakeTimeout bounds a handshake whatever ctx allows; it is
// generous for a TCG guest, where the handshake costs milliseconds.
const DefaultHandshakeTimeout = 10 * time.Second

var _ net.Conn = (*Conn)(nil)

// Conn is an authenticated agent connection. Reads translate the peer's
// refusal alert into a *RejectedError.
type Conn struct {
	*tls.Conn
	peer string
}

// Read reads application data.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		if r := rejected(c.peer, err); r != err {
			err = fmt.Errorf("agent authentication failed: %w", r)
		}
	}
	return n, err
}

// Client authenticates the host end of conn: it proves the host key and
// requires the guest key pinned in cfg (from ClientConfig). On failure conn
// is closed. The guest's verdict on the host key arrives with the first
// read (TLS 1.3 clients finish first); Conn.Read reports it clearly.
func Client(ctx context.Context, conn net.Conn, cfg *tls.Config) (*Conn, error) {
	return handshake(ctx, tls.Client(conn, cfg), roleGuest)
}

// Server authenticates the guest end of conn with cfg (from ServerConfig).
// On failure conn is closed.
func Server(ctx context.Context, conn net.Conn, cfg *tls.Config) (*Conn, error) {
	return handshake(ctx, tls.Server(conn, cfg), roleHost)
}

// ClientWrap adapts Client to client.WithWrap. The caller's deadline on the
// raw connection still applies; DefaultHandshakeTimeout bounds it further.
func ClientWrap(cfg *tls.Config) func(net.Conn) (net.Conn, error) {
	return func(c net.Conn) (net.Conn, error) { return Client(context.Background(), c, cfg) }
}

// ServerWrap adapts Server to server.Config.Wrap.
func ServerWrap(cfg *tls.Config) func(net.Conn) (net.Conn, error) {
	return func(c net.Conn) (net.Conn, error) { return Server(context.Background(), c, cfg) }
}

func handshake(ctx context.Context, tc *tls.Conn, peer string) (*Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	// HandshakeContext closes the connection if hctx ends first.
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = tc.NetConn().Close()
		return nil, explain(ctx, hctx, peer, err)
	}
	return &Conn{Conn: tc, peer: peer}, nil
}

// explain turns a handshake error into one that says what went wrong.
func explain(ctx, hctx context.Context, peer string, err error) error {
	var km *KeyMismatchError
	var pe *ProtocolError
	switch {
	case errors.As(err, &km), errors.As(err, &pe):
		return fmt.Errorf("agent authentication failed: %w", err)
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("agent authentication failed: %w", ctx.Err())
	case hctx.Err() != nil:
		return fmt.Errorf("agent authentication failed: no handshake from the %s in time (at most %s): %w", peer, DefaultHandshakeTimeout, hctx.Err())
	}
	if r := rejected(peer, err); r != err {
		return fmt.Errorf("agent authentication failed: %w", r)
	}
	return fmt.Errorf("agent authentication failed: %s handshake: %w", peer, err)
}

// rejected recognises a TLS alert from the peer; other errors pass through.
func rejected(peer string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return &RejectedError{Peer: peer, Alert: err}
	}
	return err
}

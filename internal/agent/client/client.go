// Package client is the host side of the agent protocol. Every operation
// dials a fresh connection (a yamux stream, vsock or unix connection), so
// operations never queue behind each other.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Dialer opens a byte stream to the agent.
type Dialer func(ctx context.Context) (net.Conn, error)

// DefaultTimeout bounds dial + handshake + response when ctx has no earlier
// deadline. Exec output streaming afterwards is bounded by ctx only.
const DefaultTimeout = 30 * time.Second

// Client talks to one agent.
type Client struct {
	dial    Dialer
	wrap    func(net.Conn) (net.Conn, error)
	timeout time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithWrap runs wrap on each new connection before the first frame (TLS).
func WithWrap(wrap func(net.Conn) (net.Conn, error)) Option {
	return func(c *Client) { c.wrap = wrap }
}

// WithTimeout replaces DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// New returns a Client that dials with dial.
func New(dial Dialer, opts ...Option) *Client {
	c := &Client{dial: dial, timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

// conn is one operation's connection. Writes are serialised (stdin pump and
// signals share it); ctx ending closes it, which unblocks any read.
type conn struct {
	net.Conn
	wmu  sync.Mutex
	stop func() bool
}

func (c *conn) send(t proto.Type, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return proto.WriteFrame(c.Conn, t, payload)
}

func (c *conn) sendJSON(t proto.Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.send(t, b)
}

func (c *conn) close() {
	c.stop()
	c.Conn.Close()
}

// call dials, sends Hello and Request in one write (pipelined), and reads
// HelloAck and Response. The returned conn is positioned after the Response.
func (c *Client) call(ctx context.Context, op string, args any) (*conn, json.RawMessage, error) {
	began := time.Now()
	raw, err := c.dial(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("dial agent: %w", err)
	}
	cn := &conn{Conn: raw}
	cn.stop = context.AfterFunc(ctx, func() { raw.Close() })
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = raw.SetDeadline(deadline)
	fail := func(err error) (*conn, json.RawMessage, error) {
		cn.close()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("agent %s: %w", op, ctx.Err())
		}
		if _, ok := proto.AsError(err); ok {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("agent %s: %w", op, err)
	}
	dialed := time.Now()
	if c.wrap != nil {
		w, err := c.wrap(raw)
		if err != nil {
			return fail(fmt.Errorf("wrap connection: %w", err))
		}
		cn.Conn = w
	}
	wrapped := time.Now()

	req := proto.Request{Op: op}
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return fail(err)
		}
	}
	var buf bytes.Buffer
	if err := proto.WriteJSON(&buf, proto.THello, proto.Hello{Version: proto.Version, MinVersion: proto.MinVersion}); err != nil {
		return fail(err)
	}
	if err := proto.WriteJSON(&buf, proto.TRequest, req); err != nil {
		return fail(err)
	}
	if _, err := cn.Conn.Write(buf.Bytes()); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}

	var ack proto.HelloAck
	if err := readReply(cn.Conn, proto.THelloAck, &ack); err != nil {
		return fail(err)
	}
	if ack.Version < proto.MinVersion || ack.Version > proto.Version {
		return fail(fmt.Errorf("agent chose protocol version %d, we speak %d..%d", ack.Version, proto.MinVersion, proto.Version))
	}
	var resp proto.Response
	if err := readReply(cn.Conn, proto.TResponse, &resp); err != nil {
		return fail(err)
	}
	_ = raw.SetDeadline(time.Time{})
	// Where a slow call spends its time: reaching the agent, the
	// handshake, or the agent's own work.
	slog.Debug("agent call", "op", op, "dial", dialed.Sub(began), "handshake", wrapped.Sub(dialed), "reply", time.Since(wrapped))
	return cn, resp.Result, nil
}

// readReply reads a frame of type want into v; a TError frame becomes *proto.Error.
func readReply(r net.Conn, want proto.Type, v any) error {
	f, err := proto.ReadFrame(r)
	if err != nil {
		return fmt.Errorf("read %s: %w", want, err)
	}
	switch f.Type {
	case want:
		return json.Unmarshal(f.Payload, v)
	case proto.TError:
		return decodeError(f)
	default:
		return fmt.Errorf("expected %s frame, got %s", want, f.Type)
	}
}

func decodeError(f proto.Frame) error {
	var e proto.Error
	if err := json.Unmarshal(f.Payload, &e); err != nil {
		return fmt.Errorf("undecodable error frame: %w", err)
	}
	if e.Code == "" {
		return errors.New("agent sent an error without a code")
	}
	return &e
}

// Health asks for readiness and boot stages.
func (c *Client) Health(ctx context.Context) (*proto.HealthResult, error) {
	cn, res, err := c.call(ctx, proto.OpHealth, nil)
	if err != nil {
		return nil, err
	}
	cn.close()
	var h proto.HealthResult
	if err := json.Unmarshal(res, &h); err != nil {
		return nil, fmt.Errorf("decode health result: %w", err)
	}
	return &h, nil
}

// Shutdown asks the guest to power off (or reboot). It returns once the agent
// has accepted; the VM goes away shortly after.
func (c *Client) Shutdown(ctx context.Context, reboot bool) error {
	cn, _, err := c.call(ctx, proto.OpShutdown, proto.ShutdownRequest{Reboot: reboot})
	if err != nil {
		return err
	}
	cn.close()
	return nil
}

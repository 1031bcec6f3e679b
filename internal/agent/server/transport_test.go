package server_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// transport yields a listener for the server and a dialer for the client.
type transport struct {
	name  string
	setup func(t *testing.T) (net.Listener, client.Dialer)
}

var transports = []transport{
	{"tcp", tcpTransport},
	{"pipe", pipeTransport},
	{"serialmux", serialmuxTransport},
}

func tcpTransport(t *testing.T) (net.Listener, client.Dialer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	return ln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// pipeListener hands out one end of a net.Pipe per dial: an unbuffered,
// synchronous transport that catches any reliance on buffering.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func pipeTransport(t *testing.T) (net.Listener, client.Dialer) {
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	return l, l.dial
}

// serialmuxTransport runs both yamux ends over one net.Pipe, like the host
// supervisor and the guest agent over a virtio-serial port.
func serialmuxTransport(t *testing.T) (net.Listener, client.Dialer) {
	g, h := net.Pipe()
	type result struct {
		s   *yamux.Session
		err error
	}
	gch := make(chan result, 1)
	go func() { // both ends block until their sync handshake completes
		s, err := serialmux.Server(g)
		gch <- result{s, err}
	}()
	host, err := serialmux.Client(h)
	if err != nil {
		t.Fatal(err)
	}
	gr := <-gch
	if gr.err != nil {
		t.Fatal(gr.err)
	}
	guest := gr.s
	t.Cleanup(func() { host.Close() })
	return guest, func(ctx context.Context) (net.Conn, error) { return host.Open() }
}

// startServer serves cfg on ln until the test ends.
func startServer(t *testing.T, cfg server.Config, ln net.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
}

// forEachTransport runs fn against a fresh server per transport.
func forEachTransport(t *testing.T, cfg server.Config, fn func(t *testing.T, c *client.Client, dial client.Dialer)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ln, dial := tr.setup(t)
			startServer(t, cfg, ln)
			fn(t, client.New(dial), dial)
		})
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

package server_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// transport yields a listener for the server and a dialer for the client.
type transport struct {
	name  string
	setup func(t testing.TB) (net.Listener, client.Dialer)
}

var transports = []transport{
	{"tcp", tcpTransport},
	{"socketpair", socketpairTransport},
	{"serialmux", serialmuxTransport},
}

func tcpTransport(t testing.TB) (net.Listener, client.Dialer) {
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

// pipeListener hands out one end of a connected pair per dial.
type pipeListener struct {
	pair  func() (net.Conn, net.Conn, error)
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
	a, b, err := l.pair()
	if err != nil {
		return nil, err
	}
	select {
	case l.conns <- b:
		return a, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// socketpairTransport hands out connected unix sockets: small kernel
// buffers, no listener. Not net.Pipe: with TLS both ends write close_notify
// when they close, and an unbuffered pipe stalls them for TLS's 5 s.
func socketpairTransport(t testing.TB) (net.Listener, client.Dialer) {
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{}), pair: socketPair}
	return l, l.dial
}

func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			}
			return nil, nil, err
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// serialmuxTransport runs both yamux ends over one net.Pipe, like the host
// supervisor and the guest agent over a virtio-serial port.
func serialmuxTransport(t testing.TB) (net.Listener, client.Dialer) {
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

// forEachTransport runs fn against a fresh server per transport, with
// mutual authentication on, as in production. The dialer handed to fn is
// the authenticated one too (TLS included), for tests that speak raw frames.
func forEachTransport(t *testing.T, cfg server.Config, fn func(t *testing.T, c *client.Client, dial client.Dialer)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ln, dial := tr.setup(t)
			keys := newTestKeys(t)
			cfg := cfg
			cfg.Wrap = keys.serverWrap
			startServer(t, cfg, ln)
			authDial := func(ctx context.Context) (net.Conn, error) {
				c, err := dial(ctx)
				if err != nil {
					return nil, err
				}
				return keys.clientWrap(c)
			}
			fn(t, client.New(dial, client.WithWrap(keys.clientWrap)), authDial)
		})
	}
}

// testKeys is a host key and a guest key that trust each other.
type testKeys struct {
	serverWrap, clientWrap func(net.Conn) (net.Conn, error)
	host                   ed25519.PrivateKey
	guestPub               ed25519.PublicKey
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	_, host, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	guest, guestPub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := auth.ServerConfig(guest, host.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := auth.ClientConfig(host, guestPub)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{serverWrap: auth.ServerWrap(scfg), clientWrap: auth.ClientWrap(ccfg), host: host, guestPub: guestPub}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

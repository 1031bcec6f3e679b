package server_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

var quiet = slog.New(slog.DiscardHandler)

// flakyListener fails its first n Accepts with err, as accept(2) does once
// the agent runs out of descriptors, then accepts for real.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// serveUntilCancel runs Serve on ln and reports, at the end of the test, an
// early return: for PID 1, Serve returning means the VM dies.
func serveUntilCancel(t *testing.T, cfg server.Config, ln net.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			cancel()
			t.Errorf("Serve returned before it was cancelled: %v", err)
			return
		default:
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
}

// TestAcceptErrorsDoNotEndServe plays a local user who fills the guest's
// descriptor table: accept fails with EMFILE (and friends) a few times. The
// agent must back off and keep serving, not return (PID 1 would exit).
func TestAcceptErrorsDoNotEndServe(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			inner, dial := tcpTransport(t)
			ln := &flakyListener{Listener: inner, err: &net.OpError{Op: "accept", Net: "vsock", Err: os.NewSyscallError("accept4", errno)}}
			ln.fails.Store(4)
			keys := newTestKeys(t)
			serveUntilCancel(t, server.Config{Wrap: keys.serverWrap, Log: quiet}, ln)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c := client.New(dial, client.WithWrap(keys.clientWrap))
			if _, err := c.Health(ctx); err != nil {
				t.Fatalf("health after %v accept errors: %v", errno, err)
			}
			if n := ln.fails.Load(); n >= 0 {
				t.Fatalf("%d injected errors were never seen", n+1)
			}
		})
	}
}

// countingListener tracks how many accepted connections the server still
// holds open.
type countingListener struct {
	net.Listener
	accepted, open atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	l.open.Add(1)
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// TestSilentConnectionsAreBounded plays a local user who opens many vsock
// connections and never speaks (no TLS ClientHello). The agent must hold
// only a bounded number of them, well before their handshake deadline, and
// an authenticated client must still be served while they stay open.
func TestSilentConnectionsAreBounded(t *testing.T) {
	const silent = 300
	const bound = 64 // server.DefaultMaxHandshakes
	inner, dial := tcpTransport(t)
	ln := &countingListener{Listener: inner}
	keys := newTestKeys(t)
	serveUntilCancel(t, server.Config{Wrap: keys.serverWrap, HandshakeTimeout: 30 * time.Second, Log: quiet}, ln)

	var attack []net.Conn
	t.Cleanup(func() {
		for _, c := range attack {
			c.Close()
		}
	})
	for range silent {
		c, err := dial(context.Background())
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		attack = append(attack, c)
	}
	deadline := time.Now().Add(3 * time.Second)
	for ln.accepted.Load() < silent || ln.open.Load() > bound {
		if time.Now().After(deadline) {
			t.Fatalf("server accepted %d silent connections and holds %d open; want at most %d",
				ln.accepted.Load(), ln.open.Load(), bound)
		}
		time.Sleep(5 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := client.New(dial, client.WithWrap(keys.clientWrap))
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("authenticated client not served while %d silent connections are open: %v", silent, err)
	}
	// The attacker keeps at it while the host works: still served.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if a, err := dial(context.Background()); err == nil {
				mu.Lock()
				attack = append(attack, a)
				mu.Unlock()
			}
		}
	})
	for i := range 10 {
		if _, err := c.Health(ctx); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("health %d during a slow flood: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if n := ln.open.Load(); n > bound {
		t.Fatalf("server holds %d unauthenticated connections, want at most %d", n, bound)
	}
}

// TestHandshakeDeadlineWithoutDeadlineSupport: a transport whose connections
// take no deadlines must still lose a silent peer after HandshakeTimeout,
// or it would hold its pre-auth slot forever.
func TestHandshakeDeadlineWithoutDeadlineSupport(t *testing.T) {
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{}), pair: func() (net.Conn, net.Conn, error) {
		a, b := net.Pipe()
		return a, noDeadlineConn{b}, nil
	}}
	serveUntilCancel(t, server.Config{HandshakeTimeout: 100 * time.Millisecond, Log: quiet}, l)
	c, err := l.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		got <- err
	}()
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("silent peer got data")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("silent peer on a deadline-less transport was not dropped")
	}
}

type noDeadlineConn struct{ net.Conn }

var errNoDeadline = errors.New("deadlines not supported")

func (noDeadlineConn) SetDeadline(time.Time) error      { return errNoDeadline }
func (noDeadlineConn) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (noDeadlineConn) SetWriteDeadline(time.Time) error { return errNoDeadline }

// TestServeEndsWithItsListener: a listener that is gone (a yamux session
// that ended) still ends Serve, so the serial endpoint can sync again.
func TestServeEndsWithItsListener(t *testing.T) {
	inner, _ := tcpTransport(t)
	inner.Close()
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{Log: quiet}).Serve(context.Background(), inner) }()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve on a closed listener: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve kept retrying a closed listener")
	}
}

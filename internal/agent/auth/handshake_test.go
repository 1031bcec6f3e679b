package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	k := newKeys(t)
	other := newKeys(t)
	tests := []struct {
		name string
		// client and server configs, built from the pinned-key defaults
		client func(*tls.Config) *tls.Config
		server func(*tls.Config) *tls.Config
		// substrings expected in each side's error; "" means success
		clientErr, serverErr string
		keyMismatch          bool // errors.Is(..., ErrKeyMismatch) on both sides
	}{
		{name: "pinned keys"},
		{name: "wrong host key",
			client:    func(*tls.Config) *tls.Config { return mustClientConfig(t, other.host, k.guestPub) },
			clientErr: "the guest refused our host key", serverErr: "host key " + Fingerprint(other.hostPub) + " is not the host key this VM trusts",
			keyMismatch: true},
		{name: "wrong guest key",
			server:    func(*tls.Config) *tls.Config { return mustServerConfig(t, other.guest, k.hostPub) },
			clientErr: "guest key " + Fingerprint(other.guestPub) + " does not match the key pinned for this VM", serverErr: "the host refused",
			keyMismatch: true},
		{name: "host certificate without its private key",
			client: func(c *tls.Config) *tls.Config {
				c.Certificates = []tls.Certificate{impostorCert(t, k.hostPub)}
				return c
			},
			clientErr: "remote error", serverErr: "signature"},
		{name: "guest certificate without its private key",
			server: func(c *tls.Config) *tls.Config {
				c.Certificates = []tls.Certificate{impostorCert(t, k.guestPub)}
				return c
			},
			clientErr: "signature", serverErr: "remote error"},
		{name: "no client certificate",
			client: func(c *tls.Config) *tls.Config {
				c.Certificates = nil
				return c
			},
			clientErr: "remote error", serverErr: "certificate"},
		{name: "TLS 1.2 client",
			client: func(c *tls.Config) *tls.Config {
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			},
			clientErr: "protocol version", serverErr: "unsupported versions"},
		{name: "TLS 1.2 server",
			server: func(c *tls.Config) *tls.Config {
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			},
			clientErr: "protocol version", serverErr: "unsupported versions"},
		{name: "client without ALPN",
			client: func(c *tls.Config) *tls.Config {
				c.NextProtos = nil
				return c
			},
			// Our client notices first: the server then echoes no ALPN.
			clientErr: "guest negotiated no application protocol", serverErr: "remote error"},
		{name: "foreign client without ALPN",
			client: func(c *tls.Config) *tls.Config {
				c.NextProtos, c.VerifyConnection = nil, nil
				return c
			},
			clientErr: "remote error", serverErr: "host negotiated no application protocol"},
		{name: "client with another ALPN",
			client: func(c *tls.Config) *tls.Config {
				c.NextProtos = []string{"mvm-agent/0"}
				return c
			},
			clientErr: "no application protocol", serverErr: "application protocol"},
		{name: "server without ALPN",
			server: func(c *tls.Config) *tls.Config {
				c.NextProtos = nil
				return c
			},
			clientErr: "guest negotiated no application protocol", serverErr: "remote error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ccfg := mustClientConfig(t, k.host, k.guestPub)
			scfg := mustServerConfig(t, k.guest, k.hostPub)
			if tt.client != nil {
				ccfg = tt.client(ccfg)
			}
			if tt.server != nil {
				scfg = tt.server(scfg)
			}
			c, s := handshakePair(t, ccfg, scfg)
			checkErr(t, "client", c.err, tt.clientErr)
			checkErr(t, "server", s.err, tt.serverErr)
			if tt.keyMismatch && (!errors.Is(c.err, ErrKeyMismatch) || !errors.Is(s.err, ErrKeyMismatch)) {
				t.Errorf("want ErrKeyMismatch on both sides, got client %v, server %v", c.err, s.err)
			}
			if tt.clientErr == "" && tt.serverErr == "" {
				exchange(t, c.conn, s.conn)
			}
		})
	}
}

func checkErr(t *testing.T, side string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error: %v", side, err)
	case want != "" && err == nil:
		t.Errorf("%s: succeeded, want error containing %q", side, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s: error %q does not contain %q", side, err, want)
	case want != "" && !strings.HasPrefix(err.Error(), "agent authentication failed: "):
		t.Errorf("%s: error %q lacks the agent authentication prefix", side, err)
	}
}

// exchange sends data both ways and checks the negotiated parameters.
func exchange(t *testing.T, c, s *Conn) {
	t.Helper()
	for _, cn := range []*Conn{c, s} {
		st := cn.ConnectionState()
		if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != ALPN || st.DidResume || st.CurveID != tls.X25519 {
			t.Errorf("state: version %#x, alpn %q, resumed %v, group %v", st.Version, st.NegotiatedProtocol, st.DidResume, st.CurveID)
		}
		_ = cn.SetDeadline(time.Now().Add(5 * time.Second))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
			t.Errorf("server read %q, %v", buf, err)
			return
		}
		if _, err := s.Write([]byte("pong")); err != nil {
			t.Errorf("server write: %v", err)
		}
	}()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("client write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Errorf("client read %q, %v", buf, err)
	}
	wg.Wait()
}

func TestServerAcceptsRotatedHostKeys(t *testing.T) {
	k, next := newKeys(t), newKeys(t)
	scfg := mustServerConfig(t, k.guest, k.hostPub, next.hostPub)
	for _, host := range []ed25519.PrivateKey{k.host, next.host} {
		c, s := handshakePair(t, mustClientConfig(t, host, k.guestPub), scfg)
		if c.err != nil || s.err != nil {
			t.Fatalf("client %v, server %v", c.err, s.err)
		}
		exchange(t, c.conn, s.conn)
	}
}

func TestConfigRejectsBadKeys(t *testing.T) {
	k := newKeys(t)
	if _, err := ClientConfig(k.host, nil); err == nil {
		t.Error("ClientConfig accepted no pinned key")
	}
	if _, err := ClientConfig(k.host[:10], k.guestPub); err == nil {
		t.Error("ClientConfig accepted a short private key")
	}
	if _, err := ServerConfig(k.guest); err == nil {
		t.Error("ServerConfig accepted no pinned key")
	}
	if _, err := ServerConfig(k.guest, k.hostPub[:31]); err == nil {
		t.Error("ServerConfig accepted a short pinned key")
	}
}

// TestReplay records every byte one side sent during a good handshake plus
// application data, then plays it to a fresh peer with the same keys. TLS
// 1.3 without early data derives new keys from fresh ephemeral shares, so
// the replayed flight must be refused and no data accepted.
func TestReplay(t *testing.T) {
	k := newKeys(t)
	ccfg := mustClientConfig(t, k.host, k.guestPub)
	scfg := mustServerConfig(t, k.guest, k.hostPub)

	record := func(t *testing.T, recordClient bool) []byte {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		rc, rs := &recorder{Conn: c}, &recorder{Conn: s}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := Server(ctx, rs, scfg)
			if err != nil {
				t.Errorf("recording server: %v", err)
				return
			}
			_, _ = io.ReadFull(sc, make([]byte, 7))
			_, _ = sc.Write([]byte("answer"))
		}()
		cc, err := Client(ctx, rc, ccfg)
		if err != nil {
			t.Fatalf("recording client: %v", err)
		}
		_, _ = cc.Write([]byte("request"))
		_, _ = io.ReadFull(cc, make([]byte, 6))
		wg.Wait()
		if recordClient {
			return rc.bytes()
		}
		return rs.bytes()
	}

	tests := []struct {
		name   string
		client bool // replay the client's flight to a new server
	}{
		{"client flight to a new server", true},
		{"server flight to a new client", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flight := record(t, tt.client)
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				_ = a.SetDeadline(time.Now().Add(5 * time.Second))
				go func() { _, _ = io.Copy(io.Discard, a) }()
				_, _ = a.Write(flight)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var conn *Conn
			var err error
			if tt.client {
				conn, err = Server(ctx, b, scfg)
			} else {
				conn, err = Client(ctx, b, ccfg)
			}
			if err == nil {
				// Must not get here; if it did, no replayed data may arrive.
				_ = conn.SetReadDeadline(time.Now().Add(time.Second))
				n, rerr := conn.Read(make([]byte, 64))
				t.Fatalf("replayed handshake accepted (read %d bytes, %v)", n, rerr)
			}
			if ctx.Err() != nil {
				t.Fatalf("replay was not refused, it timed out: %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestHandshakeDeadline(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		name string
		run  func(context.Context, net.Conn) (*Conn, error)
	}{
		{"client, silent guest", func(ctx context.Context, c net.Conn) (*Conn, error) {
			return Client(ctx, c, mustClientConfig(t, k.host, k.guestPub))
		}},
		{"server, silent host", func(ctx context.Context, c net.Conn) (*Conn, error) {
			return Server(ctx, c, mustServerConfig(t, k.guest, k.hostPub))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() { _, _ = io.Copy(io.Discard, b) }() // reads, never answers
			const limit = 200 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			start := time.Now()
			_, err := tt.run(ctx, a)
			took := time.Since(start)
			if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no handshake") {
				t.Fatalf("err = %v, want a deadline error", err)
			}
			if took > limit+time.Second {
				t.Fatalf("took %s with a %s deadline", took, limit)
			}
			// The connection is closed on failure.
			if _, err := a.Write([]byte{0}); err == nil {
				t.Error("connection still open after a failed handshake")
			}
		})
	}
}

func TestWrapHelpers(t *testing.T) {
	k := newKeys(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ServerWrap(mustServerConfig(t, k.guest, k.hostPub))(b)
		if err == nil {
			_, err = c.Write([]byte("x"))
		}
		done <- err
	}()
	c, err := ClientWrap(mustClientConfig(t, k.host, k.guestPub))(a)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

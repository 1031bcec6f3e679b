package auth

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// flightConn is a connection whose peer sent exactly data and then closed;
// writes are discarded. It makes each fuzz run fast and deterministic.
type flightConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	closed bool
}

func (c *flightConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *flightConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *flightConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *flightConn) LocalAddr() net.Addr              { return &net.UnixAddr{Net: "unix"} }
func (c *flightConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Net: "unix"} }
func (c *flightConn) SetDeadline(time.Time) error      { return nil }
func (c *flightConn) SetReadDeadline(time.Time) error  { return nil }
func (c *flightConn) SetWriteDeadline(time.Time) error { return nil }

// recordClientFlight returns the bytes a real client sends before it needs
// an answer (its ClientHello), as a seed that reaches deep into the server.
func recordClientFlight(t testing.TB, k keys) []byte {
	a, b := socketPair(t)
	rec := &recorder{Conn: a}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		// Read the hello, then hang up so the client stops.
		buf := make([]byte, 4096)
		_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = b.Read(buf)
		b.Close()
	}()
	_, _ = Client(ctx, rec, mustClientConfig(t, k.host, k.guestPub))
	return rec.bytes()
}

// FuzzServerHandshake feeds arbitrary bytes as the host's flight to the
// guest side: it must refuse without panicking or hanging.
func FuzzServerHandshake(f *testing.F) {
	k := newKeys(f)
	hello := recordClientFlight(f, k)
	f.Add(hello)
	f.Add([]byte{})
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	if len(hello) > 10 {
		f.Add(hello[:len(hello)/2])
		flipped := bytes.Clone(hello)
		flipped[len(flipped)-1] ^= 0xff
		f.Add(flipped)
	}
	scfg := mustServerConfig(f, k.guest, k.hostPub)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		c, err := Server(ctx, &flightConn{r: bytes.NewReader(data)}, scfg)
		if err == nil {
			c.Close()
			t.Fatal("handshake succeeded without a client key")
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("took %s", d)
		}
		if !strings.HasPrefix(err.Error(), "agent authentication failed: ") {
			t.Fatalf("unexpected error shape: %v", err)
		}
	})
}

// FuzzParseKeys covers the decoders of key text read from the config drive
// and the host key file.
func FuzzParseKeys(f *testing.F) {
	priv, pub, _ := NewGuestKey()
	ps, _ := MarshalPublicKey(pub)
	ks, _ := MarshalPrivateKey(priv)
	pemKey, _ := encodeHostKeyPEM(priv)
	for _, s := range []string{ps, ks, string(pemKey), "", "ed25519-public:", "ed25519-private:====", "-----BEGIN PRIVATE KEY-----\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParsePublicKey(s); err == nil {
			if out, _ := MarshalPublicKey(k); out != strings.TrimSpace(s) {
				t.Fatalf("public key round trip: %q -> %q", s, out)
			}
		}
		if k, err := ParsePrivateKey(s); err == nil {
			if out, _ := MarshalPrivateKey(k); out != strings.TrimSpace(s) {
				t.Fatalf("private key round trip: %q -> %q", s, out)
			}
		}
		if k, err := decodeHostKeyPEM([]byte(s)); err == nil && len(k) != 64 {
			t.Fatalf("decoded a %d-byte key", len(k))
		}
	})
}

var _ io.ReadWriteCloser = (*flightConn)(nil)

package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

type keys struct {
	host, guest       ed25519.PrivateKey
	hostPub, guestPub ed25519.PublicKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	_, host, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	guest, guestPub, err := NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	return keys{host: host, guest: guest, hostPub: host.Public().(ed25519.PublicKey), guestPub: guestPub}
}

func mustClientConfig(t testing.TB, host ed25519.PrivateKey, guestPub ed25519.PublicKey) *tls.Config {
	t.Helper()
	cfg, err := ClientConfig(host, guestPub)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustServerConfig(t testing.TB, guest ed25519.PrivateKey, hostPubs ...ed25519.PublicKey) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(guest, hostPubs...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// impostorCert is a certificate carrying pub whose CertificateVerify is
// signed by another key: what someone who copied a public certificate (but
// not the private key) could present.
func impostorCert(t testing.TB, pub ed25519.PublicKey) tls.Certificate {
	t.Helper()
	_, other, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: certNotBefore, NotAfter: certNotAfter}
	parent := &x509.Certificate{SerialNumber: big.NewInt(2)}
	der, err := x509.CreateCertificate(nil, tmpl, parent, pub, other)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: fakeSigner{pub: pub, real: other}}
}

type fakeSigner struct {
	pub  ed25519.PublicKey
	real ed25519.PrivateKey
}

func (s fakeSigner) Public() crypto.PublicKey { return s.pub }
func (s fakeSigner) Sign(r io.Reader, msg []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.real.Sign(r, msg, o)
}

type result struct {
	conn *Conn
	err  error
}

// socketPair is a connected pair of unix stream sockets. Unlike net.Pipe it
// buffers, as every real agent transport does: with net.Pipe a side that
// refuses the handshake blocks sending its alert to a peer that is itself
// blocked writing the rest of its flight.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("socketpair: %v", err)
		}
		conns[i] = c
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	return conns[0], conns[1]
}

// handshakePair runs Client and Server on the two ends of a socket pair.
func handshakePair(t testing.TB, ccfg, scfg *tls.Config) (client, server result) {
	t.Helper()
	c, s := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		server.conn, server.err = Server(ctx, s, scfg)
	}()
	client.conn, client.err = Client(ctx, c, ccfg)
	wg.Wait()
	if client.err == nil && server.err != nil {
		// TLS 1.3: the client finished before the server judged it; the
		// verdict comes with the first read.
		_ = client.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, client.err = client.conn.Read(make([]byte, 1))
	}
	return client, server
}

// recorder keeps a copy of everything written through it.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

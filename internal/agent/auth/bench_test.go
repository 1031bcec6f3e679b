package auth

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// BenchmarkHandshake measures one full mutual handshake (both sides' CPU,
// one round trip) plus a one-byte exchange so the server's verdict is in.
// "pq-hybrid" restores Go's default groups (X25519MLKEM768 first) to show
// what the product saves by using plain X25519.
func BenchmarkHandshake(b *testing.B) {
	k := newKeys(b)
	transports := []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
	}{
		{"socketpair", socketPair},
		{"pipe", func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }},
		{"tcp", tcpPair},
	}
	curves := []struct {
		name   string
		curves []tls.CurveID
	}{
		{"x25519", nil},
		{"pq-hybrid", []tls.CurveID{tls.X25519MLKEM768, tls.X25519}},
	}
	for _, tr := range transports {
		for _, cv := range curves {
			b.Run(tr.name+"/"+cv.name, func(b *testing.B) {
				ccfg := mustClientConfig(b, k.host, k.guestPub)
				scfg := mustServerConfig(b, k.guest, k.hostPub)
				if cv.curves != nil {
					ccfg.CurvePreferences, scfg.CurvePreferences = cv.curves, cv.curves
				}
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					c, s := tr.pair(b)
					done := make(chan error, 1)
					go func() {
						sc, err := Server(ctx, s, scfg)
						if err == nil {
							_, err = sc.Write([]byte{1})
						}
						done <- err
					}()
					cc, err := Client(ctx, c, ccfg)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(cc, make([]byte, 1)); err != nil {
						b.Fatal(err)
					}
					if err := <-done; err != nil {
						b.Fatal(err)
					}
					c.Close()
					s.Close()
				}
			})
		}
	}
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	return c, s
}

// BenchmarkConfig is the cost of building a config (a certificate is made
// each time): build one per VM and reuse it, not one per connection.
func BenchmarkConfig(b *testing.B) {
	k := newKeys(b)
	for b.Loop() {
		if _, err := ClientConfig(k.host, k.guestPub); err != nil {
			b.Fatal(err)
		}
	}
}

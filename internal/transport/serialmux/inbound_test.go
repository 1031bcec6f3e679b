package serialmux

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// TestGuestOpenedStreamsAreRefused plays a hostile guest: right after the
// handshake, before the host's session has sent a thing, it opens many
// streams toward the host in raw yamux frames (so no GoAway stops it) and
// fills each one's window. The host never accepts streams, so none may be
// kept (yamux would park up to AcceptBacklog of them, each with its data, in
// the supervisor's memory), while the streams the host opens still work.
func TestGuestOpenedStreamsAreRefused(t *testing.T) {
	const streams = 600        // more than yamux's default backlog of 256
	const perStream = 64 << 10 // data sent on each, within the initial window
	host, guest := pipePair(t)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	type res struct {
		s   *yamux.Session
		err error
	}
	gch := make(chan res, 1)
	go func() {
		if err := GuestSync(guest); err != nil {
			gch <- res{nil, err}
			return
		}
		// Read what the host answers meanwhile (a GoAway, a RST per stream)
		// so its writes never stall: up to whole frames, then stop, so the
		// session started below reads from a frame boundary.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			want := 12 * (1 + streams)
			guest.SetReadDeadline(time.Now().Add(3 * time.Second))
			defer guest.SetReadDeadline(time.Time{})
			buf := make([]byte, 64<<10)
			n := 0
			for n < want {
				k, err := guest.Read(buf)
				n += k
				if err != nil {
					break
				}
			}
			if rest := n % 12; rest != 0 {
				guest.SetReadDeadline(time.Now().Add(time.Second))
				io.ReadFull(guest, buf[:12-rest])
			}
		}()
		frame := make([]byte, 12+perStream)
		for i := range streams {
			// version 0, type data, flags SYN, stream id, length
			frame[0], frame[1] = 0, 0
			binary.BigEndian.PutUint16(frame[2:], 1)
			binary.BigEndian.PutUint32(frame[4:], uint32(2+2*i))
			binary.BigEndian.PutUint32(frame[8:], perStream)
			if _, err := guest.Write(frame); err != nil {
				gch <- res{nil, err}
				return
			}
		}
		<-drained
		// Then a real session, to answer the host's own streams.
		s, err := yamux.Server(guest, config())
		gch <- res{s, err}
	}()

	hs, err := Client(host)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	g := <-gch
	if g.err != nil {
		t.Fatal(g.err)
	}
	defer g.s.Close()
	go func() { // echo
		for {
			c, err := g.s.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	// The host answers a ping only once it has read all that came before.
	if _, err := g.s.Ping(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if n := hs.NumStreams(); n != 0 {
		t.Errorf("host holds %d streams the guest opened; want none", n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Errorf("heap grew by %d MiB while the guest flooded streams", grew>>20)
	}

	// The host's own streams are unaffected.
	c, err := hs.Open()
	if err != nil {
		t.Fatalf("host open: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("still works")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// orderConn notes whether the host read from the guest after the handshake
// before it had sent its GoAway.
type orderConn struct {
	net.Conn
	mu                         sync.Mutex
	synced, refused, readEarly bool
}

func (c *orderConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	switch {
	case bytes.Contains(p, []byte(goPrefix)):
		c.synced = true
	case c.synced && len(p) == 12 && p[1] == 3: // a GoAway header
		c.refused = true
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *orderConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.synced && !c.refused {
		c.readEarly = true
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// TestClientRefusesBeforeReading: a frame the guest sent right after the
// handshake must not be read before the host refuses guest streams, or a
// SYN could slip into the backlog in that window.
func TestClientRefusesBeforeReading(t *testing.T) {
	for range 20 {
		host, guest := pipePair(t)
		oc := &orderConn{Conn: host}
		go func() {
			if s, err := Server(guest); err == nil {
				defer s.Close()
				s.Accept()
			}
		}()
		s, err := Client(oc)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		oc.mu.Lock()
		early, refused := oc.readEarly, oc.refused
		oc.mu.Unlock()
		if !refused || early {
			t.Fatalf("GoAway sent: %v; read from the guest before it: %v", refused, early)
		}
	}
}

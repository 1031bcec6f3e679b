// Package serialmux turns one byte pipe (a virtio-serial port) into many
// independent streams using yamux. The guest agent is the yamux server and
// accepts one stream per operation; the host side (the per-VM supervisor) is
// the client and opens one stream per host connection. yamux gives each
// stream its own flow-control window, so a slow reader on one stream cannot
// stall another.
//
// A pipe has no connection boundaries: after a reconnect, a guest reboot or
// a snapshot restore either side may still see stale bytes of an earlier
// session. So before yamux starts, the ends run a three-way handshake of text
// lines that stale bytes cannot fake:
//
//	host  → "MVM-SYNC <nonce>"  repeated with a fresh nonce until acknowledged
//	                            (every 25 ms for the first second, then 250 ms)
//	guest → "MVM-ACK <nonce>"   for the first SYNC it sees
//	host  → "MVM-GO <nonce>"    for the first ACK of a nonce it sent
//
// The guest ignores further SYNCs between its ACK and the GO (they were
// already queued), and both ends start yamux on the byte after the GO line
// (guest) or the ACK line (host). Resending SYNC keeps resync after a restore
// fast without the guest having to announce itself: a restored guest's old
// session swallows the first SYNC, and it is ready for another within tens
// of milliseconds, hence the quick resends at first.
package serialmux

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	syncPrefix = "MVM-SYNC "
	ackPrefix  = "MVM-ACK "
	goPrefix   = "MVM-GO "
	maxLine    = 64
	// syncResend is how often the host repeats SYNC while unanswered, after
	// fastWindow of repeating it every fastResend. Few SYNCs pile up while a
	// guest boots, yet a restored one is answered without a long wait.
	syncResend = 250 * time.Millisecond
	fastResend = 25 * time.Millisecond
	fastWindow = time.Second
	// ackedTimeout is how long a guest that sent ACK waits for GO before it
	// answers a newer SYNC instead (the host that got the ACK went away).
	ackedTimeout = time.Second
)

// config is shared by both ends: keepalives detect a dead peer (the supervisor
// was killed, or the guest hung) within KeepAliveInterval+ConnectionWriteTimeout.
func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}

// Server runs the guest end over rwc. It blocks until a host completes the
// handshake; an error (EOF: no host connected) means retry shortly.
func Server(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	if err := GuestSync(rwc); err != nil {
		return nil, err
	}
	return yamux.Server(rwc, config())
}

// Client runs the host end over rwc. It blocks until the guest answers;
// close rwc to abort the wait.
//
// The host only opens streams; it never accepts one. A stream the guest
// opens would wait in yamux's accept backlog (256 of them, each allowed a
// full receive window) in host memory for as long as the session lives, so
// the session refuses them: before yamux reads a byte from the guest it
// sends a GoAway, after which yamux answers every SYN with a RST without
// creating the stream, and discards data sent on it. Host-opened streams
// are unaffected (GoAway only stops the guest from opening).
func Client(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	if err := HostSync(rwc); err != nil {
		return nil, err
	}
	g := &gatedReads{ReadWriteCloser: rwc, open: make(chan struct{})}
	defer g.release()
	sess, err := yamux.Client(g, config())
	if err != nil {
		return nil, fmt.Errorf("serial mux: %w", err)
	}
	if err := sess.GoAway(); err != nil {
		sess.Close()
		return nil, fmt.Errorf("serial mux: refuse guest streams: %w", err)
	}
	return sess, nil
}

// gatedReads holds back reads until released: the session must not see a
// frame from the guest before it refuses guest-opened streams.
type gatedReads struct {
	io.ReadWriteCloser
	open chan struct{}
	once sync.Once
}

func (g *gatedReads) release() { g.once.Do(func() { close(g.open) }) }

func (g *gatedReads) Read(p []byte) (int, error) {
	<-g.open
	return g.ReadWriteCloser.Read(p)
}

func newNonce() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// lines reads lines on a goroutine, one at a time: after each line it waits
// to be told whether to read on, so it never consumes a byte that belongs to
// the yamux session that follows.
type lines struct {
	c    chan string
	err  chan error
	more chan bool
}

func readLines(r io.Reader) *lines {
	l := &lines{c: make(chan string), err: make(chan error, 1), more: make(chan bool, 1)}
	go func() {
		for {
			line, err := readLine(r)
			if err != nil {
				l.err <- err
				return
			}
			l.c <- line
			if !<-l.more {
				return
			}
		}
	}()
	return l
}

// HostSync runs the host side of the handshake.
func HostSync(rw io.ReadWriter) error {
	l := readLines(rw)
	sent := map[string]bool{}
	sendSync := func() error {
		n, err := newNonce()
		if err != nil {
			return err
		}
		if len(sent) > 1024 {
			clear(sent) // a guest this slow answers a recent one anyway
		}
		sent[n] = true
		if _, err := io.WriteString(rw, "\n"+syncPrefix+n+"\n"); err != nil {
			return fmt.Errorf("serial sync: write: %w", err)
		}
		return nil
	}
	if err := sendSync(); err != nil {
		return err
	}
	began := time.Now()
	resend := time.NewTimer(resendAfter(0))
	defer resend.Stop()
	for {
		select {
		case err := <-l.err:
			return fmt.Errorf("serial sync: wait for guest: %w", err)
		case <-resend.C:
			if err := sendSync(); err != nil {
				return err
			}
			resend.Reset(resendAfter(time.Since(began)))
		case line := <-l.c:
			n, ok := strings.CutPrefix(line, ackPrefix)
			if !ok || !sent[n] {
				l.more <- true
				continue
			}
			l.more <- false
			if _, err := io.WriteString(rw, goPrefix+n+"\n"); err != nil {
				return fmt.Errorf("serial sync: go: %w", err)
			}
			return nil
		}
	}
}

// resendAfter is the pause before the next SYNC, elapsed into the handshake.
func resendAfter(elapsed time.Duration) time.Duration {
	if elapsed < fastWindow {
		return fastResend
	}
	return syncResend
}

// GuestSync runs the guest side of the handshake.
func GuestSync(rw io.ReadWriter) error {
	l := readLines(rw)
	acked := map[string]bool{}
	var ackedAt time.Time
	for {
		var line string
		select {
		case err := <-l.err:
			return fmt.Errorf("serial sync: wait for host: %w", err)
		case line = <-l.c:
		}
		if n, ok := strings.CutPrefix(line, goPrefix); ok && acked[n] {
			l.more <- false
			return nil
		}
		n, ok := strings.CutPrefix(line, syncPrefix)
		waiting := ackedAt.IsZero() || time.Since(ackedAt) > ackedTimeout
		if ok && validNonce(n) && waiting {
			if _, err := io.WriteString(rw, ackPrefix+n+"\n"); err != nil {
				return fmt.Errorf("serial sync: ack: %w", err)
			}
			if len(acked) > 64 {
				clear(acked)
			}
			acked[n] = true
			ackedAt = time.Now()
		}
		l.more <- true
	}
}

func validNonce(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// readLine reads one '\n'-terminated line a byte at a time, so not a byte
// past the newline is consumed: yamux must see the stream from there on.
// Over-long lines are discarded, not an error: they are stale session bytes.
func readLine(r io.Reader) (string, error) {
	var buf [maxLine]byte
	var one [1]byte
	n := 0
	overflow := false
	for {
		k, err := r.Read(one[:])
		if k == 1 {
			if one[0] == '\n' {
				if overflow {
					n, overflow = 0, false
					continue
				}
				return string(buf[:n]), nil
			}
			if n < maxLine {
				buf[n] = one[0]
				n++
			} else {
				overflow = true
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && k == 0 {
				return "", io.EOF
			}
			if k == 0 {
				return "", err
			}
		}
	}
}

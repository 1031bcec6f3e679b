// Package serialmux turns one byte pipe (a virtio-serial port) into many
// independent streams using yamux. The guest agent is the yamux server and
// accepts one stream per operation; the host side (the per-VM supervisor) is
// the client and opens one stream per host connection. yamux gives each
// stream its own flow-control window, so a slow reader on one stream cannot
// stall another.
//
// A pipe has no connection boundaries: after a reconnect either side may still
// see stale bytes of the previous session. So before yamux starts, the two ends
// synchronise: the host writes "\nMVM-SYNC <nonce>\n" and discards everything
// it reads until "MVM-ACK <nonce>\n"; the guest discards everything until a
// SYNC line and answers with the matching ACK. Both then start yamux on the
// byte right after those lines. QEMU holds host bytes until the guest opens
// the port, so one SYNC per host connection is enough.
package serialmux

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	syncPrefix = "MVM-SYNC "
	ackPrefix  = "MVM-ACK "
	maxLine    = 64
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

// Server runs the guest end over rwc. It blocks until the host's SYNC arrives;
// an error (EOF: no host connected) means the caller should retry shortly.
func Server(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	if err := GuestSync(rwc); err != nil {
		return nil, err
	}
	return yamux.Server(rwc, config())
}

// Client runs the host end over rwc. It blocks until the guest acknowledges;
// close rwc to abort the wait.
func Client(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	if err := HostSync(rwc); err != nil {
		return nil, err
	}
	return yamux.Client(rwc, config())
}

// HostSync sends a fresh SYNC and waits for its ACK.
func HostSync(rw io.ReadWriter) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	nonce := hex.EncodeToString(b[:])
	if _, err := io.WriteString(rw, "\n"+syncPrefix+nonce+"\n"); err != nil {
		return fmt.Errorf("serial sync: write: %w", err)
	}
	want := ackPrefix + nonce
	for {
		line, err := readLine(rw)
		if err != nil {
			return fmt.Errorf("serial sync: wait for guest: %w", err)
		}
		if line == want {
			return nil
		}
	}
}

// GuestSync waits for a SYNC line and acknowledges it.
func GuestSync(rw io.ReadWriter) error {
	for {
		line, err := readLine(rw)
		if err != nil {
			return fmt.Errorf("serial sync: wait for host: %w", err)
		}
		nonce, ok := strings.CutPrefix(line, syncPrefix)
		if !ok || !validNonce(nonce) {
			continue
		}
		if _, err := io.WriteString(rw, ackPrefix+nonce+"\n"); err != nil {
			return fmt.Errorf("serial sync: ack: %w", err)
		}
		return nil
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

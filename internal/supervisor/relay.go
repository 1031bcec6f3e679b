package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// How long a host connection waits for a session with the guest agent before
// it is dropped: long enough to ride out a guest reboot's reconnect.
const sessionWait = 10 * time.Second

// syncTimeout bounds one serial sync attempt before the relay reconnects and
// tries again. While the guest boots the attempts just repeat; after a
// restore the second one succeeds.
var syncTimeout = 3 * time.Second

// maxDialBackoff caps the pause between attempts to reach QEMU's chardev.
const maxDialBackoff = 100 * time.Millisecond

// relay carries host connections accepted on the agent socket as yamux
// streams over the VMM's virtio-serial chardev socket. When the session dies
// (guest rebooted, agent restarted, keepalive failed) it reconnects the
// chardev and starts a new session.
type relay struct {
	serial, agent string
	log           *slog.Logger
	ln            net.Listener
	// ready: write ReadyByte to each host connection once its stream to
	// the guest is open (Config.AgentReady).
	ready bool

	mu      sync.Mutex
	sess    *yamux.Session
	changed chan struct{} // closed and replaced whenever sess changes
}

func (r *relay) listen() error {
	os.Remove(r.agent) // stale from a crashed supervisor
	ln, err := net.Listen("unix", r.agent)
	if err != nil {
		return err
	}
	if err := os.Chmod(r.agent, 0o600); err != nil {
		ln.Close()
		return err
	}
	r.ln = ln
	r.changed = make(chan struct{})
	return nil
}

func (r *relay) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		r.ln.Close()
	}()
	go r.sessions(ctx)
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("agent socket accept", "err", err)
			}
			return
		}
		go r.serve(ctx, conn)
	}
}

// sessions keeps one live session to the guest for as long as ctx lasts.
func (r *relay) sessions(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := d.DialContext(dctx, "unix", r.serial)
		cancel()
		if err != nil {
			// QEMU creates the socket shortly after start; keep trying while
			// we live, often: a restored guest is waiting for our SYNC.
			sleep(ctx, backoff)
			backoff = min(backoff*2, maxDialBackoff)
			continue
		}
		backoff = 10 * time.Millisecond
		// Bound the handshake: a guest restored from a snapshot is still in
		// the session it had with the old host, swallows our SYNC as yamux
		// garbage and then waits for a SYNC that will never come. Dropping
		// the chardev connection and starting over sends a fresh one.
		abort := time.AfterFunc(syncTimeout, func() { conn.Close() })
		sess, err := serialmux.Client(conn)
		if !abort.Stop() || err != nil {
			conn.Close()
			if sess != nil {
				sess.Close()
			}
			r.log.Debug("agent sync failed; reconnecting", "err", err)
			continue
		}
		r.log.Debug("agent session up")
		r.set(sess)
		select {
		case <-sess.CloseChan():
		case <-ctx.Done():
		}
		r.set(nil)
		sess.Close()
		r.log.Debug("agent session closed; reconnecting")
		sleep(ctx, 100*time.Millisecond)
	}
}

func (r *relay) set(s *yamux.Session) {
	r.mu.Lock()
	r.sess = s
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// session waits for a live session, bounded by sessionWait.
func (r *relay) session(ctx context.Context) (*yamux.Session, error) {
	t := time.NewTimer(sessionWait)
	defer t.Stop()
	for {
		r.mu.Lock()
		s, ch := r.sess, r.changed
		r.mu.Unlock()
		if s != nil && !s.IsClosed() {
			return s, nil
		}
		select {
		case <-ch:
		case <-t.C:
			return nil, errors.New("no session with the guest agent")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (r *relay) serve(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	sess, err := r.session(ctx)
	if err != nil {
		r.log.Warn("drop agent connection", "err", err)
		return
	}
	stream, err := sess.OpenStream()
	if err != nil {
		// The session died under us (guest reboot); one retry on the next.
		if sess, err = r.session(ctx); err == nil {
			stream, err = sess.OpenStream()
		}
		if err != nil {
			r.log.Warn("open agent stream", "err", err)
			return
		}
	}
	defer stream.Close()
	if r.ready {
		// Nothing was read from the host yet, so a host that gave up while
		// we waited costs the guest no handshake: it sees an empty stream.
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write([]byte{ReadyByte}); err != nil {
			r.log.Debug("agent connection gone before the guest was reached", "err", err)
			return
		}
		_ = conn.SetWriteDeadline(time.Time{})
	}
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(stream, conn)
		stream.Close() // half-close: FIN to the guest, reads continue
		done <- struct{}{}
	}()
	go func() {
		io.Copy(conn, stream)
		if uc, ok := conn.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
		done <- struct{}{}
	}()
	// Returning closes both ends, which unblocks whichever copy remains.
	select {
	case <-done:
		select {
		case <-done:
		case <-sess.CloseChan():
		case <-ctx.Done():
		}
	case <-sess.CloseChan():
	case <-ctx.Done():
	}
}

// ReadyByte is what the relay writes first on a host connection, once it
// has a stream to the guest agent (Config.AgentReady).
const ReadyByte = 0x06

// AwaitReady reads the relay's ReadyByte from conn, bounded by ctx: a
// dial that returns only once the guest agent is there, so the caller's
// handshake never starts, and never times out, while the guest boots.
func AwaitReady(ctx context.Context, conn net.Conn) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	_, err := io.ReadFull(conn, b[:])
	if !stop() {
		return fmt.Errorf("wait for the agent relay: %w", context.Cause(ctx))
	}
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("wait for the agent relay: no session with the guest agent yet (the relay gave up waiting)")
	case err != nil:
		return fmt.Errorf("wait for the agent relay: %w", err)
	case b[0] != ReadyByte:
		return fmt.Errorf("wait for the agent relay: got byte %#x, want %#x", b[0], ReadyByte)
	}
	return conn.SetReadDeadline(time.Time{})
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

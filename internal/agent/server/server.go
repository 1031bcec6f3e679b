// Package server is the guest side of the agent protocol: it accepts
// connections from any net.Listener (virtio-serial mux, vsock, unix, tcp),
// serves one operation per connection, and runs each connection on its own
// goroutine so a slow or hostile client never blocks another.
package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/reaper"
)

// Defaults for Config's zero values.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = time.Minute
	// DefaultMaxHandshakes bounds connections still in their handshake.
	DefaultMaxHandshakes = 64
)

// Accept errors that leave the listener usable are retried after a pause
// that starts at minAcceptBackoff and doubles up to maxAcceptBackoff; they
// are logged at most once per acceptLogEvery.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
	acceptLogEvery   = 10 * time.Second
)

// Config configures a Server. The zero value serves health and exec as the
// agent's own user; shutdown is refused unless Shutdown is set.
type Config struct {
	Log *slog.Logger
	// Wrap, when set, runs on every accepted connection before the first
	// frame (the place for TLS with pinned keys). It runs under the handshake
	// deadline.
	Wrap func(net.Conn) (net.Conn, error)
	// Rekey, when set, replaces the keys Wrap authenticates with for later
	// connections (post-restore's new identity for a clone).
	Rekey func(hostPublicKey, guestPrivateKey string) error
	// Stages is reported by the health operation.
	Stages *Stages
	// Env (KEY=VALUE) is added to every exec's environment after the base
	// environment and before the request's own.
	Env []string
	// Shutdown is called after the shutdown operation has been answered.
	Shutdown func(reboot bool)
	// HandshakeTimeout bounds Wrap + Hello + Request (default 10s).
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections still in that phase (default
	// DefaultMaxHandshakes). Until Wrap has authenticated it, a connection
	// may come from anyone who can reach the listener: on vsock, any user
	// of the host. Past the bound the oldest is dropped for the newest, so
	// a pile of silent connections can neither exhaust the agent's
	// descriptors nor lock out the host, whose handshake takes milliseconds.
	MaxHandshakes int
	// WriteTimeout bounds each frame write (default 1m).
	WriteTimeout time.Duration
	// Reaper starts exec'd processes; nil means reaper.Default().
	Reaper *reaper.Reaper
	// PasswdFile and GroupFile resolve exec users (default /etc/passwd, /etc/group).
	PasswdFile, GroupFile string
	// AgentVersion is reported in HelloAck.
	AgentVersion string
	// Console allows the console operation (guestcfg Policy.Console, from
	// the image recipe's [access] console).
	Console bool
	// ConsoleIdle is the default console idle timeout (default 15m).
	ConsoleIdle time.Duration
	// CopyRoot confines copy-in/copy-out (default /); tests use a temp dir.
	CopyRoot string
}

// startFunc starts a process; a seam so fuzzing never runs real commands.
type startFunc func(path string, argv []string, attr *os.ProcAttr) (*reaper.Process, error)

// Server serves the agent protocol.
type Server struct {
	cfg         Config
	log         *slog.Logger
	start       startFunc
	consoleBusy atomic.Bool // one console session per VM
	checks      checkState
	services    statusList[proto.ServiceStatus]
	sys         guestSys // clock, hostname, entropy: the guest's own state
	pending     pendingSet
}

// New returns a Server; it starts nothing until Serve.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.PasswdFile == "" {
		cfg.PasswdFile = "/etc/passwd"
	}
	if cfg.GroupFile == "" {
		cfg.GroupFile = "/etc/group"
	}
	if cfg.ConsoleIdle == 0 {
		cfg.ConsoleIdle = DefaultConsoleIdle
	}
	if cfg.CopyRoot == "" {
		cfg.CopyRoot = "/"
	}
	s := &Server{cfg: cfg, log: cfg.Log, sys: realGuestSys, pending: pendingSet{max: cfg.MaxHandshakes}}
	s.start = func(path string, argv []string, attr *os.ProcAttr) (*reaper.Process, error) {
		r := s.cfg.Reaper
		if r == nil {
			var err error
			if r, err = reaper.Default(); err != nil {
				return nil, err
			}
		}
		return r.Start(path, argv, attr)
	}
	return s
}

// Serve accepts connections until ctx ends or ln fails, then closes ln, ends
// every open connection (killing their processes) and waits for them.
//
// Serve is what keeps PID 1 alive, so it returns only when the listener is
// gone (closed, a yamux session that ended). Errors that say the guest is
// short of something (descriptors, memory, buffers) or that one connection
// died before it was accepted are retried after a growing pause: a local
// user who fills the descriptor table must not end the VM.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	acceptLog := logEvery{every: acceptLogEvery}
	evictLog := logEvery{every: acceptLogEvery}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !temporary(err) {
				return fmt.Errorf("accept: %w", err)
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			if n, ok := acceptLog.allow(time.Now()); ok {
				s.log.Warn("agent accept failed; retrying", "err", err, "backoff", backoff, "suppressed", n)
			}
			if !sleepCtx(ctx, backoff) {
				return ctx.Err()
			}
			continue
		}
		backoff = 0
		slot, evicted := s.pending.add(conn)
		if evicted != nil {
			evicted.Close()
			if n, ok := evictLog.allow(time.Now()); ok {
				s.log.Warn("too many agent connections in handshake; dropped the oldest",
					"max", s.cfg.MaxHandshakes, "suppressed", n)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleConn(ctx, conn, slot)
		}()
	}
}

// temporary reports whether an Accept error leaves the listener usable.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, // out of something
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, // one connection failed
		syscall.EINTR, syscall.EAGAIN, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sleepCtx pauses for d; false means ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// logEvery lets one message through per interval and counts the others.
// Not safe for concurrent use: Serve's loop alone uses it.
type logEvery struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many were suppressed since.
func (l *logEvery) allow(now time.Time) (int, bool) {
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}

// pendingSet holds the connections still in their handshake, oldest first.
type pendingSet struct {
	mu    sync.Mutex
	max   int
	conns list.List // of net.Conn
}

// add admits c. At the bound it removes the oldest connection and returns
// it for the caller to close; its handler then fails and exits.
func (p *pendingSet) add(c net.Conn) (slot *list.Element, evicted net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns.Len() >= p.max {
		evicted = p.conns.Remove(p.conns.Front()).(net.Conn)
	}
	return p.conns.PushBack(c), evicted
}

// done frees slot; a slot already evicted is left alone.
func (p *pendingSet) done(slot *list.Element) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns.Remove(slot) // a no-op once evicted: list.Remove checks membership
}

// handle runs one connection: handshake, one operation, close.
func (s *Server) handle(ctx context.Context, raw net.Conn) { s.handleConn(ctx, raw, nil) }

// handleConn is handle for a connection that holds slot among those in
// handshake (nil: none), freed once the handshake is over.
func (s *Server) handleConn(ctx context.Context, raw net.Conn, slot *list.Element) {
	defer raw.Close()
	released := false
	release := func() {
		if !released && slot != nil {
			released = true
			s.pending.done(slot)
		}
	}
	defer release()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	defer func() {
		// A bug in one handler must not take PID 1 down with it.
		if r := recover(); r != nil {
			s.log.Error("agent connection panicked", "panic", r)
		}
	}()

	// The handshake deadline is what frees a silent peer's slot. A
	// transport without deadlines gets a timer that closes the connection.
	inTime := func() bool { return true }
	if err := raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		t := time.AfterFunc(s.cfg.HandshakeTimeout, func() { raw.Close() })
		defer t.Stop()
		inTime = t.Stop
	}
	conn := raw
	if s.cfg.Wrap != nil {
		c, err := s.cfg.Wrap(raw)
		if err != nil {
			s.log.Warn("agent connection rejected", "err", err)
			return
		}
		defer c.Close()
		conn = c
	}
	w := &wire{conn: conn, timeout: s.cfg.WriteTimeout}
	req, err := s.handshake(w)
	if err != nil {
		if e, ok := proto.AsError(err); ok {
			_ = w.fail(e)
		}
		s.log.Debug("agent handshake failed", "err", err)
		return
	}
	release()
	if !inTime() {
		return // the timer closed the connection
	}
	_ = conn.SetReadDeadline(time.Time{})
	if err := s.dispatch(ctx, w, req); err != nil {
		s.log.Debug("agent operation failed", "op", req.Op, "err", err)
	}
}

// handshake reads Hello and Request, then answers HelloAck. Errors worth
// telling the peer are *proto.Error; others (EOF, timeout) just drop it.
func (s *Server) handshake(w *wire) (*proto.Request, error) {
	f, err := readControl(w.conn, proto.THello)
	if err != nil {
		return nil, err
	}
	var h proto.Hello
	if err := f.Decode(&h); err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	v := min(h.Version, proto.Version)
	if h.Version < 1 || v < max(h.MinVersion, proto.MinVersion) {
		return nil, proto.Errorf(proto.CodeVersion, "client speaks %d..%d, agent %d..%d",
			h.MinVersion, h.Version, proto.MinVersion, proto.Version)
	}
	// The client pipelines its Request, so read it before answering: this
	// needs no buffering in the transport (net.Pipe, a full window).
	f, err = readControl(w.conn, proto.TRequest)
	if err != nil {
		return nil, err
	}
	var req proto.Request
	if err := f.Decode(&req); err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	if err := w.sendJSON(proto.THelloAck, proto.HelloAck{Version: v, Agent: s.cfg.AgentVersion}); err != nil {
		return nil, fmt.Errorf("send hello-ack: %w", err)
	}
	return &req, nil
}

// readControl reads one frame that must be of type want. Malformed input is a
// bad-request *proto.Error; a closed or silent peer is returned as is.
func readControl(r io.Reader, want proto.Type) (proto.Frame, error) {
	f, err := proto.ReadFrame(r)
	switch {
	case err == nil:
	case errors.Is(err, proto.ErrFrameTooLarge), errors.Is(err, proto.ErrEmptyFrame),
		errors.Is(err, proto.ErrUnknownType):
		return f, proto.Errorf(proto.CodeBadRequest, "reading %s: %v", want, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return f, proto.Errorf(proto.CodeBadRequest, "reading %s: truncated frame", want)
	default:
		return f, fmt.Errorf("read %s: %w", want, err)
	}
	if f.Type != want {
		return f, proto.Errorf(proto.CodeBadRequest, "expected %s frame, got %s", want, f.Type)
	}
	return f, nil
}

func (s *Server) dispatch(ctx context.Context, w *wire, req *proto.Request) error {
	switch req.Op {
	case proto.OpHealth:
		return s.health(ctx, w, req.Args)
	case proto.OpConsole:
		return s.console(ctx, w, req.Args)
	case proto.OpForward:
		return s.forward(ctx, w, req.Args)
	case proto.OpCopyIn:
		return s.copyIn(w, req.Args)
	case proto.OpCopyOut:
		return s.copyOut(w, req.Args)
	case proto.OpExec:
		return s.exec(ctx, w, req.Args)
	case proto.OpShutdown:
		return s.shutdown(w, req.Args)
	case proto.OpPostRestore:
		return s.postRestore(w, req.Args)
	case proto.OpDiff:
		return s.diff(w, req.Args)
	case proto.OpSecrets:
		return s.secrets(w, req.Args)
	default:
		return w.fail(proto.Errorf(proto.CodeUnknownOp, "operation %q is not supported", req.Op))
	}
}

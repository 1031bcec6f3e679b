package guestinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// Endpoint is where the agent listens.
type Endpoint struct {
	Kind string // "serial", "vsock", "unix", "tcp"
	Addr string // port name, socket path or host:port
	Port uint32 // vsock port
}

func (e Endpoint) String() string {
	if e.Kind == "vsock" {
		return fmt.Sprintf("vsock:%d", e.Port)
	}
	return e.Kind + ":" + e.Addr
}

// ParseEndpoint parses unix:PATH, tcp:ADDR, vsock:PORT or serial:NAME.
func ParseEndpoint(s string) (Endpoint, error) {
	kind, addr, ok := strings.Cut(s, ":")
	if !ok || addr == "" {
		return Endpoint{}, fmt.Errorf("listen address %q: want unix:PATH, tcp:ADDR, vsock:PORT or serial:NAME", s)
	}
	switch kind {
	case "unix":
		if !filepath.IsAbs(addr) {
			return Endpoint{}, fmt.Errorf("unix socket path %q must be absolute", addr)
		}
	case "tcp":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return Endpoint{}, fmt.Errorf("tcp address %q: %w", addr, err)
		}
	case "vsock":
		p, err := strconv.ParseUint(addr, 10, 32)
		if err != nil || p == 0 {
			return Endpoint{}, fmt.Errorf("vsock port %q: want 1..4294967295", addr)
		}
		return Endpoint{Kind: kind, Port: uint32(p)}, nil
	case "serial":
	default:
		return Endpoint{}, fmt.Errorf("listen address %q: unknown kind %q", s, kind)
	}
	return Endpoint{Kind: kind, Addr: addr}, nil
}

// EndpointFromConfig maps the config drive's transport to an Endpoint.
func EndpointFromConfig(t guestcfg.Transport) Endpoint {
	switch t.Kind {
	case guestcfg.TransportVsock:
		return Endpoint{Kind: "vsock", Port: cmpOr(t.VsockPort, guestcfg.DefaultVsockPort)}
	case guestcfg.TransportUnix:
		return Endpoint{Kind: "unix", Addr: t.UnixPath}
	default:
		name := t.SerialName
		if name == "" {
			name = guestcfg.SerialPortName
		}
		return Endpoint{Kind: "serial", Addr: name}
	}
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// retryPause is the pause between attempts to (re)open a transport. Short:
// it is latency the host sees when it connects right after boot.
const retryPause = 30 * time.Millisecond

// ServeEndpoint serves srv on ep until ctx ends. The serial port is kept
// across sessions and reopened when no host is connected; listeners are
// retried while their device is not ready yet.
func ServeEndpoint(ctx context.Context, srv *server.Server, ep Endpoint, log *slog.Logger) error {
	if ep.Kind == "serial" {
		return serveSerial(ctx, srv, ep.Addr, log)
	}
	ln, err := listen(ctx, ep, log)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

func listen(ctx context.Context, ep Endpoint, log *slog.Logger) (net.Listener, error) {
	switch ep.Kind {
	case "unix":
		_ = os.Remove(ep.Addr) // stale socket from an earlier run
		ln, err := net.Listen("unix", ep.Addr)
		if err != nil {
			return nil, err
		}
		// Defence in depth on top of authentication: only the owner may connect.
		if err := os.Chmod(ep.Addr, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	case "tcp":
		return net.Listen("tcp", ep.Addr)
	case "vsock":
		// The vsock transport module may still be loading: retry for a while.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ln, err := vsock.Listen(ep.Port, nil)
			if err == nil {
				return ln, nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("vsock listen port %d: %w", ep.Port, err)
			}
			log.Debug("vsock not ready", "err", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("unknown endpoint kind %q", ep.Kind)
}

// findVirtioPort returns /dev/vportNpM for the virtio-serial port named name.
func findVirtioPort(sysDir, name string) (string, error) {
	ents, err := os.ReadDir(sysDir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join("/dev", e.Name()), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q: %w", name, os.ErrNotExist)
}

// serveSerial runs one yamux session per host connection. With no host
// connected, reads on the port return EOF at once, so the sync fails and we
// reopen the port shortly.
//
// A session that ends (a new host's SYNC arrived, as after a snapshot
// restore or a supervisor restart) is followed by a sync on the same open
// port: the SYNC that ended it has more queued behind it, and closing the
// port would discard them and wait for the host's next resend.
func serveSerial(ctx context.Context, srv *server.Server, name string, log *slog.Logger) error {
	var lastErr string
	note := func(msg string, err error) {
		if s := msg + err.Error(); s != lastErr { // log changes, not every retry
			lastErr = s
			log.Info(msg, "port", name, "err", err)
		}
	}
	for ctx.Err() == nil {
		dev, err := findVirtioPort("/sys/class/virtio-ports", name)
		if err != nil {
			note("waiting for serial port", err)
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			note("open serial port", err)
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { f.Close() })
		port := &detachable{File: f}
		for ctx.Err() == nil {
			sess, err := serialmux.Server(port)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					note("serial sync", err)
				}
				break
			}
			lastErr = ""
			log.Info("host connected", "port", name)
			err = srv.Serve(ctx, sess)
			sess.Close()
			log.Info("host session ended", "port", name, "err", err)
			if !port.reattach() {
				break
			}
		}
		stop()
		f.Close()
		sleepCtx(ctx, retryPause)
	}
	return ctx.Err()
}

// detachable is the serial port as a yamux session sees it: closing the
// session only interrupts its reads (an expired deadline), so the port stays
// open for the next sync. A port that takes no deadlines closes for real.
type detachable struct {
	*os.File
}

func (d *detachable) Close() error {
	if err := d.File.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return d.File.Close()
	}
	return nil
}

// reattach clears the deadline Close set; false means the port is closed.
func (d *detachable) reattach() bool {
	return d.File.SetReadDeadline(time.Time{}) == nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// PortForward is one "[HOST:]GUEST" forward: a host port on 127.0.0.1 to a
// TCP port on the guest's loopback.
type PortForward struct {
	HostPort  int // 0: pick a free port
	GuestPort uint16
}

// ParsePortForward parses "GUEST" (host port = guest port) or "HOST:GUEST".
func ParsePortForward(s string) (PortForward, error) {
	hostPart, guestPart, two := strings.Cut(s, ":")
	if !two {
		guestPart = hostPart
	}
	g, err := strconv.ParseUint(guestPart, 10, 16)
	if err != nil || g == 0 {
		return PortForward{}, fmt.Errorf("forward %q: guest port must be 1..65535", s)
	}
	pf := PortForward{HostPort: int(g), GuestPort: uint16(g)}
	if two {
		h, err := strconv.ParseUint(hostPart, 10, 16)
		if err != nil {
			return PortForward{}, fmt.Errorf("forward %q: host port must be 0..65535 (0 picks a free one)", s)
		}
		pf.HostPort = int(h)
	}
	return pf, nil
}

// Forward listens on 127.0.0.1 for every forward and relays each accepted
// connection to the guest port through its own agent connection. It calls
// ready once per listener (with the actual address) and runs until ctx
// ends. It needs no guest network.
func (m *Manager) Forward(ctx context.Context, name string, fwds []PortForward, ready func(PortForward, net.Addr)) error {
	c, err := m.Agent(ctx, name, "forward ports of")
	if err != nil {
		return err
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, f := range fwds {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.HostPort)))
		if err != nil {
			return fmt.Errorf("forward %d: %w", f.GuestPort, err)
		}
		lns = append(lns, ln)
		if ready != nil {
			ready(f, ln.Addr())
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- m.serveForward(ctx, c, ln, fwds[i])
		}()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, ln := range lns {
			ln.Close()
		}
	})
	defer stop()
	wg.Wait()
	close(errc)
	if ctx.Err() != nil {
		return nil // Ctrl-C is how forwarding ends
	}
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) serveForward(ctx context.Context, c *client.Client, ln net.Listener, f PortForward) error {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		local, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("forward %d: accept: %w", f.GuestPort, err)
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer local.Close()
			if err := relay(ctx, c, local, f.GuestPort); err != nil && ctx.Err() == nil {
				m.Log.Warn("forwarded connection failed", "guest_port", f.GuestPort, "err", err)
			}
		}()
	}
}

// relay joins one local connection to a new agent stream until both
// directions end (half-closes are passed on) or ctx ends.
func relay(ctx context.Context, c *client.Client, local net.Conn, port uint16) error {
	s, err := c.Forward(ctx, proto.ForwardRequest{Port: port})
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close(); local.Close() })
	defer stop()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(s, local)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(local, s)
		if tc, ok := local.(*net.TCPConn); ok && err == nil {
			_ = tc.CloseWrite()
		}
		errc <- err
	}()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.Close()
			local.Close()
		}
	}
	return first
}

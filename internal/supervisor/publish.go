package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Published ports: host listeners bound before the VMM starts and proxied
// to the guest's own address (bridged networks) for as long as the VM runs.

// Tunables; variables so tests can shorten them.
var (
	// publishDialTimeout bounds reaching the guest for one connection. The
	// guest may still be booting, so refusals are retried within it.
	publishDialTimeout = 5 * time.Second
	publishDialRetry   = 100 * time.Millisecond
	// udpFlowIdle is how long a UDP client may stay silent (both ways)
	// before its flow and socket to the guest are dropped.
	udpFlowIdle = 60 * time.Second
	// Per published port; beyond them new clients are turned away so a
	// flood cannot exhaust the supervisor's descriptors.
	maxTCPConns = 1024
	maxUDPFlows = 1024
	// minListenPort is 1: a random host port is of no use to anyone. Tests
	// lower it to bind free ports.
	minListenPort uint64 = 1
)

// maxDatagram holds any UDP payload.
const maxDatagram = 64 << 10

// publisher owns the bound listeners of Config.Publish.
type publisher struct {
	log   *slog.Logger
	addrs []net.Addr // bound addresses, in spec order
	tcp   []*tcpPublish
	udp   []*udpPublish

	cancel context.CancelFunc // set by serve
	wg     sync.WaitGroup
	once   sync.Once
}

type tcpPublish struct {
	spec Publish
	ln   *net.TCPListener
}

type udpPublish struct {
	spec   Publish
	conn   *net.UDPConn
	target *net.UDPAddr

	mu     sync.Mutex
	flows  map[netip.AddrPort]*udpFlow
	closed bool // no new flows once the publisher stops
}

// udpFlow is one client's conversation, with its own socket to the guest so
// replies can be told apart.
type udpFlow struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the target
	last   time.Time    // last datagram either way; guarded by udpPublish.mu
}

// validatePublish checks one entry before anything is bound.
func validatePublish(p Publish) error {
	if p.Proto != "tcp" && p.Proto != "udp" {
		return fmt.Errorf("proto %q: want tcp or udp", p.Proto)
	}
	if _, err := splitAddr(p.Listen, minListenPort); err != nil {
		return fmt.Errorf("listen %q: %w", p.Listen, err)
	}
	host, err := splitAddr(p.Target, 1)
	if err != nil {
		return fmt.Errorf("target %q: %w", p.Target, err)
	}
	// An empty host would dial the supervisor's own machine.
	if host == "" {
		return fmt.Errorf("target %q: no host", p.Target)
	}
	return nil
}

// splitAddr checks addr is host:port with a numeric port of at least
// lowest, and returns the host.
func splitAddr(addr string, lowest uint64) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n < lowest {
		return "", fmt.Errorf("port %q: want a number 1-65535", port)
	}
	return host, nil
}

// bindPublish validates specs and binds every listener. It runs before the
// VMM starts so a taken port fails the start instead of a running VM
// silently missing it. Nothing is served until serve; on error nothing
// stays bound.
func bindPublish(specs []Publish, log *slog.Logger) (*publisher, error) {
	p := &publisher{log: log}
	for _, s := range specs {
		if err := validatePublish(s); err != nil {
			p.close()
			return nil, fmt.Errorf("publish %s %s->%s: %w", s.Proto, s.Listen, s.Target, err)
		}
	}
	for _, s := range specs {
		addr, err := p.bind(s)
		if err != nil {
			p.close()
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("publish %s %s: host port is already taken: %w", s.Proto, s.Listen, err)
			}
			return nil, fmt.Errorf("publish %s %s: %w", s.Proto, s.Listen, err)
		}
		p.addrs = append(p.addrs, addr)
		log.Info("port published", "proto", s.Proto, "listen", addr.String(), "target", s.Target)
	}
	return p, nil
}

func (p *publisher) bind(s Publish) (net.Addr, error) {
	if s.Proto == "tcp" {
		ln, err := net.Listen("tcp", s.Listen)
		if err != nil {
			return nil, err
		}
		p.tcp = append(p.tcp, &tcpPublish{spec: s, ln: ln.(*net.TCPListener)})
		return ln.Addr(), nil
	}
	target, err := net.ResolveUDPAddr("udp", s.Target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	c, err := net.ListenPacket("udp", s.Listen)
	if err != nil {
		return nil, err
	}
	p.udp = append(p.udp, &udpPublish{
		spec: s, conn: c.(*net.UDPConn), target: target,
		flows: make(map[netip.AddrPort]*udpFlow),
	})
	return c.LocalAddr(), nil
}

// Addrs returns the bound host addresses in spec order (the real port when
// a spec asked for port 0).
func (p *publisher) Addrs() []net.Addr { return p.addrs }

// serve proxies every listener until ctx ends or stop is called. stop closes
// the listeners and every connection and flow, and returns once all of them
// are gone, so the host ports are free again when it returns.
func (p *publisher) serve(ctx context.Context) (stop func()) {
	ctx, p.cancel = context.WithCancel(ctx)
	// The supervisor's context ending ends everything even without stop.
	context.AfterFunc(ctx, p.closeSockets)
	for _, t := range p.tcp {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.acceptTCP(ctx, t)
		}()
	}
	for _, u := range p.udp {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveUDP(u)
		}()
	}
	return p.close
}

// close stops serving (if serve ran) and releases every socket. It may be
// called more than once.
func (p *publisher) close() {
	p.once.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		p.closeSockets()
		p.wg.Wait()
	})
}

// closeSockets closes listeners and UDP flows; TCP connections close
// themselves when the serve context ends.
func (p *publisher) closeSockets() {
	for _, t := range p.tcp {
		t.ln.Close()
	}
	for _, u := range p.udp {
		u.conn.Close()
		u.mu.Lock()
		u.closed = true
		for _, f := range u.flows {
			f.conn.Close()
		}
		u.mu.Unlock()
	}
}

func (p *publisher) acceptTCP(ctx context.Context, t *tcpPublish) {
	slots := make(chan struct{}, maxTCPConns)
	var pause time.Duration
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Out of descriptors and the like: back off rather than spin.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.log.Warn("publish accept", "listen", t.spec.Listen, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		select {
		case slots <- struct{}{}:
		default:
			p.log.Debug("publish: too many connections, refused", "listen", t.spec.Listen, "client", c.RemoteAddr().String())
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-slots }()
			p.proxyTCP(ctx, t.spec.Target, c)
		}()
	}
}

// proxyTCP carries one client connection to the guest. Idle connections are
// left alone: long-lived ones are legitimate. Only ctx ends them.
func (p *publisher) proxyTCP(ctx context.Context, target string, c *net.TCPConn) {
	defer c.Close()
	client := c.RemoteAddr().String()
	up, err := dialGuest(ctx, target)
	if err != nil {
		p.log.Debug("publish: guest unreachable", "client", client, "err", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	p.log.Debug("publish: connection", "client", client, "target", target)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(up, c)
	}()
	pipe(c, up)
	<-done
	p.log.Debug("publish: connection closed", "client", client, "target", target)
}

// dialGuest dials target, retrying within publishDialTimeout: while the
// guest boots its port is refused or its address not yet reachable.
func dialGuest(ctx context.Context, target string) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, publishDialTimeout)
	defer cancel()
	var d net.Dialer
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		c, err := d.DialContext(ctx, "tcp", target)
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		retry.Reset(publishDialRetry)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial guest %s: %w", target, err)
		case <-retry.C:
		}
	}
}

// pipe copies src to dst and passes src's EOF on as a half-close, so a
// peer that shuts down its sending side still gets the reply. An error
// either way ends the whole connection.
func pipe(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}

// serveUDP reads client datagrams from the host socket and forwards each to
// its client's flow.
func (p *publisher) serveUDP(u *udpPublish) {
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Debug("publish: udp read", "listen", u.spec.Listen, "err", err)
			time.Sleep(10 * time.Millisecond) // never spin on a persistent error
			continue
		}
		f := p.flow(u, client)
		if f == nil {
			continue
		}
		if _, err := f.conn.Write(buf[:n]); err != nil {
			p.log.Debug("publish: udp to guest", "client", client.String(), "err", err)
		}
	}
}

// flow returns client's flow, marked active, starting it if need be; nil
// when the datagram must be dropped.
func (p *publisher) flow(u *udpPublish, client netip.AddrPort) *udpFlow {
	u.mu.Lock()
	defer u.mu.Unlock()
	if f := u.flows[client]; f != nil {
		// Marked under the lock so an expiry check never races this datagram.
		f.last = time.Now()
		return f
	}
	if u.closed {
		return nil
	}
	if len(u.flows) >= maxUDPFlows {
		p.log.Debug("publish: too many udp flows, dropped", "listen", u.spec.Listen, "client", client.String())
		return nil
	}
	c, err := net.DialUDP("udp", nil, u.target)
	if err != nil {
		p.log.Debug("publish: udp flow failed", "client", client.String(), "err", err)
		return nil
	}
	f := &udpFlow{client: client, conn: c, last: time.Now()}
	u.flows[client] = f
	p.log.Debug("publish: udp flow", "client", client.String(), "target", u.spec.Target)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.runFlow(u, f)
	}()
	return f
}

// bufs lend read buffers only while a reply is being relayed, so idle flows
// hold none.
var bufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// runFlow relays the guest's replies to the client until the flow has been
// idle for udpFlowIdle or its socket is closed.
func (p *publisher) runFlow(u *udpPublish, f *udpFlow) {
	defer f.conn.Close()
	rc, err := f.conn.SyscallConn()
	if err != nil {
		u.drop(f)
		return
	}
	for {
		u.mu.Lock()
		deadline := f.last.Add(udpFlowIdle)
		u.mu.Unlock()
		f.conn.SetReadDeadline(deadline)
		err := waitDatagram(rc)
		if err == nil {
			b := bufs.Get().(*[]byte)
			var n int
			if n, err = f.conn.Read(*b); err == nil {
				u.mu.Lock()
				f.last = time.Now()
				u.mu.Unlock()
				if _, werr := u.conn.WriteToUDPAddrPort((*b)[:n], f.client); werr != nil {
					p.log.Debug("publish: udp to client", "client", f.client.String(), "err", werr)
				}
			}
			bufs.Put(b)
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if u.expire(f) {
				p.log.Debug("publish: udp flow idle", "client", f.client.String())
				return
			}
		case errors.Is(err, syscall.ECONNREFUSED):
			// The guest's port is not open (yet): keep the flow.
		default:
			if !errors.Is(err, net.ErrClosed) {
				p.log.Debug("publish: udp from guest", "client", f.client.String(), "err", err)
			}
			u.drop(f)
			return
		}
	}
}

// waitDatagram blocks until a datagram (or a socket error) is pending on the
// connection, or its read deadline passes, without reading it.
func waitDatagram(rc syscall.RawConn) error {
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		_, _, serr = syscall.Recvfrom(int(fd), nil, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return serr != syscall.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// expire removes f if it is still idle and reports whether it did.
func (u *udpPublish) expire(f *udpFlow) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(f.last) < udpFlowIdle {
		return false
	}
	if u.flows[f.client] == f {
		delete(u.flows, f.client)
	}
	return true
}

func (u *udpPublish) drop(f *udpFlow) {
	u.mu.Lock()
	if u.flows[f.client] == f {
		delete(u.flows, f.client)
	}
	u.mu.Unlock()
}

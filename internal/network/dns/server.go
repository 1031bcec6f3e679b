// Package dns runs the per-network DNS server that VMs use via their
// gateway address. It answers the network's VM names itself and forwards
// every other query to the host's current resolvers, re-reading the host's
// resolv.conf when it changes so VPN switches need no restart.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	miekg "github.com/miekg/dns"
)

const (
	defaultResolvConf   = "/etc/resolv.conf"
	defaultUpstreamPort = "53"
	defaultTimeout      = 2 * time.Second
	defaultMaxInflight  = 256

	// localTTL is short because VMs come and go and reuse names.
	localTTL = 5

	// shutdownGrace bounds how long Close waits for running handlers; the
	// upstream exchanges are cancelled first, so this is rarely reached.
	shutdownGrace = 5 * time.Second
)

// Config describes one network's DNS server.
type Config struct {
	// Zone is the network's name, e.g. "default": VM "web" answers both as
	// "web" and as "web.default".
	Zone string
	// Listen is the "ip:port" served on both UDP and TCP.
	Listen string
	// Lookup maps a VM name (lower case, no zone, no trailing dot) to its
	// address. It is called for every local query, so it must be cheap.
	Lookup func(name string) (netip.Addr, bool)
	// Reverse maps a VM address back to its name for PTR queries. Optional.
	Reverse func(ip netip.Addr) (string, bool)
	// ResolvConf is the host's resolv.conf; default "/etc/resolv.conf".
	ResolvConf string
	// UpstreamPort is the port used for every upstream server; default "53".
	UpstreamPort string
	// Self lists our own addresses; they are never used as upstreams, so a
	// host resolv.conf pointing at us cannot create a forwarding loop. The
	// host part of Listen is added automatically.
	Self []netip.Addr
	// Allow is the egress-policy hook for forwarded names (lower case, no
	// trailing dot). Nil allows everything; false answers NXDOMAIN without
	// asking upstream. Local VM names never reach it. Only the query name is
	// checked, not CNAME targets; pair it with OnAnswer to learn addresses.
	Allow func(name string) bool
	// OnAnswer is called with the A/AAAA addresses of a successful forwarded
	// answer and the smallest TTL in its answer section. It runs before the
	// reply is sent, so the caller can admit the addresses before the VM
	// connects to them. Optional.
	OnAnswer func(name string, addrs []netip.Addr, ttl time.Duration)
	// Log receives debug records for failed forwards and rare state changes.
	// Nil discards.
	Log *slog.Logger
	// Timeout bounds each upstream attempt; default 2s.
	Timeout time.Duration
	// MaxInflight caps concurrent forwarded queries; beyond it queries get
	// SERVFAIL at once. Default 256.
	MaxInflight int
}

// Server is a DNS server for one VM network. Use New, then Start and Close,
// or Serve to tie its lifetime to a context.
type Server struct {
	cfg        Config
	zone       string   // lower case, no trailing dot
	zoneLabels []string // zone split into labels, for suffix matching
	log        *slog.Logger
	timeout    time.Duration
	up         *upstreams
	sem        chan struct{}

	// ctx is cancelled by Close so in-flight upstream exchanges end at once.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	udp     *miekg.Server
	tcp     *miekg.Server
	udpAddr net.Addr
	tcpAddr net.Addr
	done    chan error // one value per serve loop when it exits
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	zone := strings.ToLower(strings.TrimSuffix(cfg.Zone, "."))
	if zone == "" {
		return nil, errors.New("dns: zone is empty")
	}
	if _, ok := miekg.IsDomainName(zone); !ok {
		return nil, fmt.Errorf("dns: invalid zone %q", cfg.Zone)
	}
	if cfg.Lookup == nil {
		return nil, errors.New("dns: Lookup is nil")
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("dns: invalid listen address %q: %w", cfg.Listen, err)
	}
	self := slices.Clone(cfg.Self)
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
		self = append(self, ip)
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = defaultResolvConf
	}
	if cfg.UpstreamPort == "" {
		cfg.UpstreamPort = defaultUpstreamPort
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = defaultMaxInflight
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("zone", zone, "listen", cfg.Listen)

	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		zone:       zone,
		zoneLabels: miekg.SplitDomainName(zone + "."),
		log:        log,
		timeout:    cfg.Timeout,
		up:         newUpstreams(cfg.ResolvConf, cfg.UpstreamPort, self, log),
		sem:        make(chan struct{}, cfg.MaxInflight),
		ctx:        ctx,
		cancel:     cancel,
	}, nil
}

// Start binds UDP and TCP on the listen address and serves in the
// background. It fails if either socket cannot be bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("dns: server is closed")
	}
	if s.started {
		return errors.New("dns: server already started")
	}

	pc, err := net.ListenPacket("udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("dns: listen udp %s: %w", s.cfg.Listen, err)
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen tcp %s: %w", s.cfg.Listen, err)
	}

	handler := miekg.HandlerFunc(s.handle)
	s.udp = &miekg.Server{
		PacketConn: pc,
		Handler:    handler,
		// The default 512 would cut EDNS queries that carry options.
		UDPSize: miekg.DefaultMsgSize,
	}
	s.tcp = &miekg.Server{Listener: ln, Handler: handler}
	s.done = make(chan error, 2)

	// Shutdown fails on a server that has not started yet, so wait for both
	// loops before returning; a loop that dies first reports its error.
	var running []*miekg.Server
	for _, srv := range []*miekg.Server{s.udp, s.tcp} {
		up := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(up) }
		go func() {
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("dns serve loop failed", "err", err)
			}
			s.done <- err
		}()
		select {
		case <-up:
			running = append(running, srv)
		case err := <-s.done:
			for _, r := range running {
				_ = r.Shutdown()
			}
			pc.Close()
			ln.Close()
			if err == nil {
				err = errors.New("stopped before it started")
			}
			return fmt.Errorf("dns: serve %s: %w", s.cfg.Listen, err)
		}
	}
	s.udpAddr = pc.LocalAddr()
	s.tcpAddr = ln.Addr()
	s.started = true
	s.log.Debug("dns server listening", "udp", s.udpAddr, "tcp", s.tcpAddr)
	return nil
}

// Serve starts the server and runs it until ctx is done or a serve loop
// fails, then shuts it down. It returns nil after a clean cancellation.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.done:
		// Put it back so Close sees both loops accounted for.
		s.done <- err
		cerr := s.Close()
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		return errors.Join(fmt.Errorf("dns: serve %s: %w", s.cfg.Listen, err), cerr)
	}
}

// Addr returns the bound UDP and TCP addresses, or nils before Start.
func (s *Server) Addr() (udp, tcp net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udpAddr, s.tcpAddr
}

// Close stops both listeners, aborts in-flight upstream queries and waits
// for handlers to finish. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	if !s.started {
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var errs []error
	for _, srv := range []*miekg.Server{s.udp, s.tcp} {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Loop errors were logged (and returned by Serve); here we only wait.
wait:
	for range 2 {
		select {
		case <-s.done:
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			break wait
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns: close %s: %w", s.cfg.Listen, err)
	}
	return nil
}

package dns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// upstreamFunc is a fake upstream's behaviour; network is "udp" or "tcp".
type upstreamFunc func(network string, w miekg.ResponseWriter, r *miekg.Msg)

// fakeUpstream is a miekg server on a loopback address standing in for a
// host resolver.
type fakeUpstream struct {
	ip   string
	fn   upstreamFunc
	udpN atomic.Int32
	tcpN atomic.Int32
	last atomic.Pointer[miekg.Msg]
}

func (f *fakeUpstream) queries() int { return int(f.udpN.Load() + f.tcpN.Load()) }

func (f *fakeUpstream) handler(network string) miekg.HandlerFunc {
	return func(w miekg.ResponseWriter, r *miekg.Msg) {
		if network == "tcp" {
			f.tcpN.Add(1)
		} else {
			f.udpN.Add(1)
		}
		f.last.Store(r.Copy())
		f.fn(network, w, r)
	}
}

// startFakes serves every fake on UDP and TCP of one shared port (on
// distinct 127.0.0.x addresses), since the server uses one upstream port.
func startFakes(t testing.TB, fakes ...*fakeUpstream) string {
	t.Helper()
	for range 20 {
		var closers []io.Closer
		closeAll := func() {
			for _, c := range closers {
				c.Close()
			}
		}
		pc0, err := net.ListenPacket("udp", fakes[0].ip+":0")
		if err != nil {
			t.Fatalf("listen fake upstream: %v", err)
		}
		closers = append(closers, pc0)
		_, port, _ := net.SplitHostPort(pc0.LocalAddr().String())

		type socks struct {
			pc net.PacketConn
			ln net.Listener
		}
		var all []socks
		ok := true
		for i, f := range fakes {
			var pc net.PacketConn = pc0
			if i > 0 {
				if pc, err = net.ListenPacket("udp", net.JoinHostPort(f.ip, port)); err != nil {
					ok = false
					break
				}
				closers = append(closers, pc)
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(f.ip, port))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, ln)
			all = append(all, socks{pc, ln})
		}
		if !ok {
			closeAll()
			continue
		}
		for i, f := range fakes {
			accept := func(miekg.Header) miekg.MsgAcceptAction { return miekg.MsgAccept }
			startMiekg(t, &miekg.Server{PacketConn: all[i].pc, Handler: f.handler("udp"), MsgAcceptFunc: accept})
			startMiekg(t, &miekg.Server{Listener: all[i].ln, Handler: f.handler("tcp"), MsgAcceptFunc: accept})
		}
		return port
	}
	t.Fatal("no free shared port for fake upstreams")
	return ""
}

func startMiekg(t testing.TB, srv *miekg.Server) {
	t.Helper()
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	select {
	case <-up:
	case <-time.After(2 * time.Second):
		t.Fatal("fake upstream did not start")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.ShutdownContext(ctx)
		<-done
	})
}

// answerA replies with one A record per given address.
func answerA(ttl uint32, ips ...string) upstreamFunc {
	return func(_ string, w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg).SetReply(r)
		for _, ip := range ips {
			m.Answer = append(m.Answer, &miekg.A{
				Hdr: miekg.RR_Header{Name: r.Question[0].Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: ttl},
				A:   net.ParseIP(ip),
			})
		}
		_ = w.WriteMsg(m)
	}
}

func rcodeAnswer(rcode int) upstreamFunc {
	return func(_ string, w miekg.ResponseWriter, r *miekg.Msg) {
		_ = w.WriteMsg(new(miekg.Msg).SetRcode(r, rcode))
	}
}

func silent(string, miekg.ResponseWriter, *miekg.Msg) {}

// errLog counts error records: the handler logs at error level only when it
// recovered a panic, which tests must treat as a failure.
type errLog struct {
	mu   *sync.Mutex
	msgs *[]string
}

func (h errLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h errLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	*h.msgs = append(*h.msgs, b.String())
	return nil
}
func (h errLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errLog) WithGroup(string) slog.Handler      { return h }

func newErrLog() (*slog.Logger, func() []string) {
	h := errLog{mu: new(sync.Mutex), msgs: new([]string)}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.msgs...)
	}
}

var testVMs = map[string]netip.Addr{
	"web": netip.MustParseAddr("10.88.0.2"),
	"db":  netip.MustParseAddr("10.88.0.3"),
	"v6":  netip.MustParseAddr("fd00::5"),
}

func testLookup(name string) (netip.Addr, bool) {
	a, ok := testVMs[name]
	return a, ok
}

func testReverse(ip netip.Addr) (string, bool) {
	for n, a := range testVMs {
		if a == ip {
			return n, true
		}
	}
	return "", false
}

// writeResolvConf replaces path atomically, as NetworkManager does.
func writeResolvConf(t testing.TB, path string, nameservers ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test\nsearch example.test\n")
	for _, ns := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type testEnv struct {
	srv    *Server
	udp    string
	tcp    string
	resolv string
}

// newEnv starts a server on 127.0.0.1 with random ports whose resolv.conf
// lists nameservers, reached on port.
func newEnv(t *testing.T, port string, nameservers []string, mod func(*Config)) *testEnv {
	t.Helper()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	writeResolvConf(t, resolv, nameservers...)
	log, errs := newErrLog()
	cfg := Config{
		Zone:         "default",
		Listen:       "127.0.0.1:0",
		Lookup:       testLookup,
		Reverse:      testReverse,
		ResolvConf:   resolv,
		UpstreamPort: port,
		Log:          log,
		Timeout:      500 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if e := errs(); len(e) > 0 {
			t.Errorf("error logs: %q", e)
		}
	})
	u, c := srv.Addr()
	return &testEnv{srv: srv, udp: u.String(), tcp: c.String(), resolv: resolv}
}

func (e *testEnv) addr(network string) string {
	if network == "tcp" {
		return e.tcp
	}
	return e.udp
}

func question(name string, qtype uint16) *miekg.Msg {
	return new(miekg.Msg).SetQuestion(name, qtype)
}

// exchange sends m and fails the test on any transport error; the client
// timeout puts a deadline on every read.
func exchange(t *testing.T, network, addr string, m *miekg.Msg) *miekg.Msg {
	t.Helper()
	c := miekg.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("exchange %s %s %s: %v", network, addr, m.Question[0].String(), err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}

// firstA returns the first A or AAAA address in the answer, or "".
func firstA(r *miekg.Msg) string {
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *miekg.A:
			return rr.A.String()
		case *miekg.AAAA:
			return rr.AAAA.String()
		}
	}
	return ""
}

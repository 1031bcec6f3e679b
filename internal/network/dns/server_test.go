package dns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

func TestLocalNames(t *testing.T) {
	up := &fakeUpstream{ip: "127.0.0.1", fn: answerA(60, "192.0.2.1")}
	port := startFakes(t, up)
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) { c.Listen = "127.0.0.4:0" })

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		network string
		rcode   int
		answer  string // A/AAAA address or PTR target; "" for no answer
	}{
		{"short name", "web.", miekg.TypeA, "udp", miekg.RcodeSuccess, "10.88.0.2"},
		{"zone name", "web.default.", miekg.TypeA, "udp", miekg.RcodeSuccess, "10.88.0.2"},
		{"mixed case", "WEB.Default.", miekg.TypeA, "udp", miekg.RcodeSuccess, "10.88.0.2"},
		{"over tcp", "db.default.", miekg.TypeA, "tcp", miekg.RcodeSuccess, "10.88.0.3"},
		{"any", "db.", miekg.TypeANY, "udp", miekg.RcodeSuccess, "10.88.0.3"},
		{"aaaa of v4 vm", "web.default.", miekg.TypeAAAA, "udp", miekg.RcodeSuccess, ""},
		{"mx of vm", "web.", miekg.TypeMX, "udp", miekg.RcodeSuccess, ""},
		{"v6 vm aaaa", "v6.default.", miekg.TypeAAAA, "udp", miekg.RcodeSuccess, "fd00::5"},
		{"v6 vm a", "v6.default.", miekg.TypeA, "udp", miekg.RcodeSuccess, ""},
		{"unknown in zone", "nope.default.", miekg.TypeA, "udp", miekg.RcodeNameError, ""},
		{"below vm", "x.web.default.", miekg.TypeA, "udp", miekg.RcodeNameError, ""},
		{"unknown single label", "nope.", miekg.TypeA, "udp", miekg.RcodeNameError, ""},
		{"zone apex", "default.", miekg.TypeA, "udp", miekg.RcodeSuccess, ""},
		{"ptr", "2.0.88.10.in-addr.arpa.", miekg.TypePTR, "udp", miekg.RcodeSuccess, "web.default."},
		{"ptr upper", "3.0.88.10.IN-ADDR.ARPA.", miekg.TypePTR, "tcp", miekg.RcodeSuccess, "db.default."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := exchange(t, tt.network, env.addr(tt.network), question(tt.qname, tt.qtype))
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", miekg.RcodeToString[r.Rcode], miekg.RcodeToString[tt.rcode])
			}
			if !r.Authoritative {
				t.Error("local answer is not authoritative")
			}
			if tt.answer == "" {
				if len(r.Answer) != 0 {
					t.Fatalf("answers %v, want none", r.Answer)
				}
				return
			}
			if len(r.Answer) != 1 {
				t.Fatalf("answers %v, want one", r.Answer)
			}
			rr := r.Answer[0]
			got := firstA(r)
			if ptr, ok := rr.(*miekg.PTR); ok {
				got = ptr.Ptr
			}
			if got != tt.answer {
				t.Errorf("answer %q, want %q", got, tt.answer)
			}
			if rr.Header().Ttl != localTTL {
				t.Errorf("ttl %d, want %d", rr.Header().Ttl, localTTL)
			}
			if rr.Header().Name != tt.qname {
				t.Errorf("owner %q, want %q", rr.Header().Name, tt.qname)
			}
		})
	}
	if n := up.queries(); n != 0 {
		t.Errorf("upstream saw %d queries for local names", n)
	}
}

func TestForward(t *testing.T) {
	up := &fakeUpstream{ip: "127.0.0.1", fn: answerA(60, "192.0.2.1")}
	port := startFakes(t, up)
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) { c.Listen = "127.0.0.4:0" })

	tests := []struct {
		name    string
		network string
		q       *miekg.Msg
		upNet   string
	}{
		{"udp", "udp", question("example.com.", miekg.TypeA), "udp"},
		{"tcp goes upstream over tcp", "tcp", question("example.org.", miekg.TypeA), "tcp"},
		{"unknown ptr", "udp", question("9.9.88.10.in-addr.arpa.", miekg.TypePTR), "udp"},
		{"edns kept", "udp", question("edns.example.", miekg.TypeA).SetEdns0(4096, true), "udp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			udp0, tcp0 := up.udpN.Load(), up.tcpN.Load()
			r := exchange(t, tt.network, env.addr(tt.network), tt.q)
			if r.Rcode != miekg.RcodeSuccess || firstA(r) != "192.0.2.1" {
				t.Fatalf("reply %v", r)
			}
			if !r.RecursionAvailable || r.Authoritative {
				t.Errorf("ra=%v aa=%v, want forwarded flags", r.RecursionAvailable, r.Authoritative)
			}
			gotNet := "udp"
			if up.tcpN.Load() > tcp0 {
				gotNet = "tcp"
			}
			if up.udpN.Load()+up.tcpN.Load() != udp0+tcp0+1 || gotNet != tt.upNet {
				t.Errorf("upstream udp %d->%d tcp %d->%d, want one %s query",
					udp0, up.udpN.Load(), tcp0, up.tcpN.Load(), tt.upNet)
			}
			last := up.last.Load()
			if last.Id == tt.q.Id {
				t.Log("upstream id equals client id (possible, but unlikely)")
			}
			if opt := tt.q.IsEdns0(); opt != nil {
				uo := last.IsEdns0()
				if uo == nil || !uo.Do() || uo.UDPSize() < opt.UDPSize() {
					t.Errorf("upstream OPT %v, want the client's (DO, size >= %d)", uo, opt.UDPSize())
				}
			}
		})
	}
}

func TestEDNSLocalReply(t *testing.T) {
	env := newEnv(t, "53", nil, nil)
	tests := []struct {
		name string
		q    *miekg.Msg
		opt  bool
	}{
		{"plain", question("web.", miekg.TypeA), false},
		{"edns", question("web.", miekg.TypeA).SetEdns0(1400, true), true},
		{"edns servfail", question("example.com.", miekg.TypeA).SetEdns0(1400, false), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := exchange(t, "udp", env.udp, tt.q)
			if got := r.IsEdns0() != nil; got != tt.opt {
				t.Errorf("reply has OPT %v, want %v", got, tt.opt)
			}
		})
	}
}

func TestResolvConfChange(t *testing.T) {
	a := &fakeUpstream{ip: "127.0.0.2", fn: answerA(60, "192.0.2.2")}
	b := &fakeUpstream{ip: "127.0.0.3", fn: answerA(60, "192.0.2.3")}
	port := startFakes(t, a, b)
	env := newEnv(t, port, []string{"127.0.0.2"}, nil)

	if got := firstA(exchange(t, "udp", env.udp, question("vpn.example.", miekg.TypeA))); got != "192.0.2.2" {
		t.Fatalf("first answer %q, want from first upstream", got)
	}
	steps := []struct {
		name    string
		rewrite func()
		want    string
	}{
		{"rename", func() { writeResolvConf(t, env.resolv, "127.0.0.3") }, "192.0.2.3"},
		{"in place", func() {
			if err := os.WriteFile(env.resolv, []byte("nameserver 127.0.0.2\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "192.0.2.2"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.rewrite()
			deadline := time.Now().Add(3 * time.Second)
			for {
				got := firstA(exchange(t, "udp", env.udp, question("vpn.example.", miekg.TypeA)))
				if got == st.want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("still answered %q after rewrite, want %q", got, st.want)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func TestNoUsableUpstream(t *testing.T) {
	// The fake sits on our own listen address, so only the self check
	// keeps us from using it.
	up := &fakeUpstream{ip: "127.0.0.1", fn: answerA(60, "192.0.2.1")}
	port := startFakes(t, up)
	tests := []struct {
		name    string
		content *string
	}{
		{"empty", ptr("")},
		{"comments only", ptr("# nameserver 127.0.0.1\n; nameserver 127.0.0.1\n")},
		{"unspecified", ptr("nameserver 0.0.0.0\nnameserver ::\n")},
		{"garbage", ptr("nameserver not-an-ip\nnameserver\n")},
		{"own listen address", ptr("nameserver 127.0.0.1\n")},
		{"missing file", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, port, nil, nil)
			if tt.content == nil {
				if err := os.Remove(env.resolv); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(env.resolv, []byte(*tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			r := exchange(t, "udp", env.udp, question("example.com.", miekg.TypeA))
			if r.Rcode != miekg.RcodeServerFailure {
				t.Errorf("rcode %s, want SERVFAIL", miekg.RcodeToString[r.Rcode])
			}
		})
	}
	if n := up.queries(); n != 0 {
		t.Errorf("upstream on our own address saw %d queries", n)
	}
}

func ptr(s string) *string { return &s }

func TestSelfSkipped(t *testing.T) {
	self := &fakeUpstream{ip: "127.0.0.2", fn: answerA(60, "192.0.2.2")}
	other := &fakeUpstream{ip: "127.0.0.3", fn: answerA(60, "192.0.2.3")}
	port := startFakes(t, self, other)
	env := newEnv(t, port, []string{"127.0.0.2", "::ffff:127.0.0.2", "127.0.0.3"}, func(c *Config) {
		c.Self = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	})
	if got := firstA(exchange(t, "udp", env.udp, question("example.com.", miekg.TypeA))); got != "192.0.2.3" {
		t.Errorf("answer %q, want the non-self upstream's", got)
	}
	if n := self.queries(); n != 0 {
		t.Errorf("self upstream saw %d queries", n)
	}
}

func TestAllow(t *testing.T) {
	up := &fakeUpstream{ip: "127.0.0.1", fn: answerA(60, "192.0.2.1")}
	port := startFakes(t, up)
	var mu sync.Mutex
	var seen []string
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) {
		c.Listen = "127.0.0.4:0"
		c.Allow = func(name string) bool {
			mu.Lock()
			seen = append(seen, name)
			mu.Unlock()
			return name != "blocked.example"
		}
	})
	tests := []struct {
		qname   string
		rcode   int
		queries int32
	}{
		{"BLOCKED.example.", miekg.RcodeNameError, 0},
		{"ok.example.", miekg.RcodeSuccess, 1},
		{"web.", miekg.RcodeSuccess, 0}, // local names bypass the hook
	}
	for _, tt := range tests {
		t.Run(tt.qname, func(t *testing.T) {
			before := up.udpN.Load()
			r := exchange(t, "udp", env.udp, question(tt.qname, miekg.TypeA))
			if r.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", miekg.RcodeToString[r.Rcode], miekg.RcodeToString[tt.rcode])
			}
			if got := up.udpN.Load() - before; got != tt.queries {
				t.Errorf("upstream queries %d, want %d", got, tt.queries)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"blocked.example", "ok.example"}; !slices.Equal(seen, want) {
		t.Errorf("Allow saw %q, want %q", seen, want)
	}
}

func TestOnAnswer(t *testing.T) {
	fn := func(_ string, w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg).SetReply(r)
		if strings.HasPrefix(r.Question[0].Name, "missing") {
			m.Rcode = miekg.RcodeNameError
			_ = w.WriteMsg(m)
			return
		}
		for _, s := range []string{
			r.Question[0].Name + " 300 IN CNAME target.example.",
			"target.example. 60 IN A 192.0.2.7",
			"target.example. 120 IN AAAA 2001:db8::7",
		} {
			rr, err := miekg.NewRR(s)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}
	up := &fakeUpstream{ip: "127.0.0.1", fn: fn}
	port := startFakes(t, up)

	type call struct {
		name  string
		addrs []netip.Addr
		ttl   time.Duration
	}
	var mu sync.Mutex
	var calls []call
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) {
		c.Listen = "127.0.0.4:0"
		c.OnAnswer = func(name string, addrs []netip.Addr, ttl time.Duration) {
			mu.Lock()
			calls = append(calls, call{name, addrs, ttl})
			mu.Unlock()
		}
	})
	exchange(t, "udp", env.udp, question("Alias.Example.", miekg.TypeA))
	exchange(t, "udp", env.udp, question("missing.example.", miekg.TypeA))

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("OnAnswer calls %v, want exactly one", calls)
	}
	c := calls[0]
	want := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	if c.name != "alias.example" || !slices.Equal(c.addrs, want) || c.ttl != 60*time.Second {
		t.Errorf("OnAnswer(%q, %v, %v), want (alias.example, %v, 1m0s)", c.name, c.addrs, c.ttl, want)
	}
}

func TestTruncation(t *testing.T) {
	many := make([]string, 60)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).String()
	}
	full := answerA(60, many...)
	one := answerA(60, "192.0.2.1")
	fn := func(network string, w miekg.ResponseWriter, r *miekg.Msg) {
		big := strings.HasPrefix(r.Question[0].Name, "big")
		switch {
		case network == "udp":
			// Always claim truncation over UDP to force the TCP retry.
			m := new(miekg.Msg).SetReply(r)
			m.Truncated = true
			_ = w.WriteMsg(m)
		case big:
			full(network, w, r)
		default:
			one(network, w, r)
		}
	}
	up := &fakeUpstream{ip: "127.0.0.1", fn: fn}
	port := startFakes(t, up)
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) { c.Listen = "127.0.0.4:0" })

	tests := []struct {
		name      string
		network   string
		q         *miekg.Msg
		answers   int
		truncated bool
	}{
		{"retried over tcp", "udp", question("small.example.", miekg.TypeA), 1, false},
		{"capped to 512", "udp", question("big.example.", miekg.TypeA), -1, true},
		{"edns client gets all", "udp", question("big.example.", miekg.TypeA).SetEdns0(4096, false), 60, false},
		{"tcp client gets all", "tcp", question("big.example.", miekg.TypeA), 60, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tcp0 := up.tcpN.Load()
			r := exchange(t, tt.network, env.addr(tt.network), tt.q)
			if r.Truncated != tt.truncated {
				t.Errorf("TC=%v, want %v", r.Truncated, tt.truncated)
			}
			if tt.answers >= 0 && len(r.Answer) != tt.answers {
				t.Errorf("%d answers, want %d", len(r.Answer), tt.answers)
			}
			if tt.answers < 0 && (len(r.Answer) == 0 || len(r.Answer) >= 60) {
				t.Errorf("%d answers, want a truncated subset", len(r.Answer))
			}
			r.Compress = true // as sent on the wire
			if r.Len() > 512 && tt.network == "udp" && tt.q.IsEdns0() == nil {
				t.Errorf("udp reply is %d bytes, over 512", r.Len())
			}
			if up.tcpN.Load() != tcp0+1 {
				t.Errorf("upstream tcp queries %d -> %d, want one", tcp0, up.tcpN.Load())
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name       string
		first      upstreamFunc
		second     upstreamFunc
		rcode      int
		answer     string
		minElapsed time.Duration
		maxElapsed time.Duration
	}{
		{"both silent", silent, silent, miekg.RcodeServerFailure, "", 2 * timeout, 2*timeout + 700*time.Millisecond},
		{"first silent", silent, answerA(60, "192.0.2.3"), miekg.RcodeSuccess, "192.0.2.3", timeout, timeout + 700*time.Millisecond},
		{"first servfail", rcodeAnswer(miekg.RcodeServerFailure), answerA(60, "192.0.2.3"), miekg.RcodeSuccess, "192.0.2.3", 0, 700 * time.Millisecond},
		{"both refuse", rcodeAnswer(miekg.RcodeRefused), rcodeAnswer(miekg.RcodeRefused), miekg.RcodeRefused, "", 0, 700 * time.Millisecond},
		{"nxdomain is final", rcodeAnswer(miekg.RcodeNameError), answerA(60, "192.0.2.3"), miekg.RcodeNameError, "", 0, 700 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &fakeUpstream{ip: "127.0.0.2", fn: tt.first}
			b := &fakeUpstream{ip: "127.0.0.3", fn: tt.second}
			port := startFakes(t, a, b)
			env := newEnv(t, port, []string{"127.0.0.2", "127.0.0.3"}, func(c *Config) { c.Timeout = timeout })
			start := time.Now()
			r := exchange(t, "udp", env.udp, question("slow.example.", miekg.TypeA))
			elapsed := time.Since(start)
			if r.Rcode != tt.rcode || firstA(r) != tt.answer {
				t.Errorf("reply %s %q, want %s %q", miekg.RcodeToString[r.Rcode], firstA(r), miekg.RcodeToString[tt.rcode], tt.answer)
			}
			if elapsed < tt.minElapsed || elapsed > tt.maxElapsed {
				t.Errorf("took %v, want within [%v, %v]", elapsed, tt.minElapsed, tt.maxElapsed)
			}
		})
	}
}

func TestInflightLimit(t *testing.T) {
	got := make(chan struct{}, 1)
	release := make(chan struct{})
	answer := answerA(60, "192.0.2.1")
	fn := func(network string, w miekg.ResponseWriter, r *miekg.Msg) {
		got <- struct{}{}
		select {
		case <-release:
		case <-time.After(2 * time.Second):
		}
		answer(network, w, r)
	}
	up := &fakeUpstream{ip: "127.0.0.1", fn: fn}
	port := startFakes(t, up)
	env := newEnv(t, port, []string{"127.0.0.1"}, func(c *Config) {
		c.Listen = "127.0.0.4:0"
		c.MaxInflight = 1
		c.Timeout = 3 * time.Second
	})

	first := make(chan *miekg.Msg, 1)
	go func() {
		c := miekg.Client{Timeout: 3 * time.Second}
		r, _, _ := c.Exchange(question("first.example.", miekg.TypeA), env.udp)
		first <- r
	}()
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("first query never reached upstream")
	}

	start := time.Now()
	r := exchange(t, "udp", env.udp, question("second.example.", miekg.TypeA))
	if r.Rcode != miekg.RcodeServerFailure {
		t.Errorf("second query rcode %s, want SERVFAIL", miekg.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("refusal took %v, want immediate", d)
	}
	// Local names need no upstream slot.
	if r := exchange(t, "udp", env.udp, question("web.", miekg.TypeA)); firstA(r) != "10.88.0.2" {
		t.Errorf("local answer during saturation: %v", r)
	}

	close(release)
	select {
	case r := <-first:
		if r == nil || firstA(r) != "192.0.2.1" {
			t.Errorf("first query reply %v", r)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("first query never finished")
	}
}

func TestMalformed(t *testing.T) {
	env := newEnv(t, "53", nil, nil)

	multi := question("web.", miekg.TypeA)
	multi.Question = append(multi.Question, miekg.Question{Name: "db.", Qtype: miekg.TypeA, Qclass: miekg.ClassINET})
	none := question("web.", miekg.TypeA)
	none.Question = nil
	resp := question("web.", miekg.TypeA)
	resp.Response = true
	notify := question("web.", miekg.TypeSOA)
	notify.Opcode = miekg.OpcodeNotify

	tests := []struct {
		name  string
		msg   *miekg.Msg
		rcode int // -1: no reply expected
	}{
		{"two questions", multi, miekg.RcodeFormatError},
		{"no question", none, miekg.RcodeFormatError},
		{"response", resp, -1},
		{"notify", notify, miekg.RcodeNotImplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Both through the real socket (miekg's accept checks first)
			// and straight into the handler.
			wire, err := tt.msg.Pack()
			if err != nil {
				t.Fatal(err)
			}
			got := rawUDP(t, env.udp, wire)
			checkRaw(t, "socket", got, tt.msg.Id, tt.rcode)

			rec := &recorder{}
			env.srv.handle(rec, tt.msg)
			var b []byte
			if len(rec.msgs) > 0 {
				b = rec.msgs[0]
			}
			checkRaw(t, "handler", b, tt.msg.Id, tt.rcode)
		})
	}

	t.Run("garbage", func(t *testing.T) {
		if got := rawUDP(t, env.udp, []byte{0x12, 0x34, 0x01}); got != nil {
			t.Errorf("reply to garbage: %x", got)
		}
		// The server must still work afterwards.
		if r := exchange(t, "udp", env.udp, question("web.", miekg.TypeA)); firstA(r) != "10.88.0.2" {
			t.Errorf("after garbage: %v", r)
		}
	})
}

// rawUDP sends b and returns the reply, or nil if none arrives soon.
func rawUDP(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func checkRaw(t *testing.T, via string, b []byte, id uint16, rcode int) {
	t.Helper()
	if rcode < 0 {
		if b != nil {
			t.Errorf("%s: unexpected reply %x", via, b)
		}
		return
	}
	if b == nil {
		t.Errorf("%s: no reply", via)
		return
	}
	m := new(miekg.Msg)
	if err := m.Unpack(b); err != nil {
		t.Errorf("%s: reply does not unpack: %v", via, err)
		return
	}
	if m.Id != id || m.Rcode != rcode || !m.Response {
		t.Errorf("%s: reply id=%d rcode=%s qr=%v, want id=%d rcode=%s", via, m.Id,
			miekg.RcodeToString[m.Rcode], m.Response, id, miekg.RcodeToString[rcode])
	}
}

func TestNew(t *testing.T) {
	base := Config{Zone: "default", Listen: "127.0.0.1:0", Lookup: testLookup}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"zone with dot and case", func(c *Config) { c.Zone = "Isolated." }, ""},
		{"empty zone", func(c *Config) { c.Zone = "" }, "zone is empty"},
		{"bad zone", func(c *Config) { c.Zone = "a..b" }, "invalid zone"},
		{"no lookup", func(c *Config) { c.Lookup = nil }, "Lookup is nil"},
		{"bad listen", func(c *Config) { c.Listen = "10.88.0.1" }, "invalid listen address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			_, err := New(cfg)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("New: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartBindErrors(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	tests := []struct {
		name   string
		listen string
		want   string
	}{
		{"udp taken", pc.LocalAddr().String(), "listen udp " + pc.LocalAddr().String()},
		{"tcp taken", ln.Addr().String(), "listen tcp " + ln.Addr().String()},
		{"not local", "192.0.2.1:0", "listen udp 192.0.2.1:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Zone: "default", Listen: tt.listen, Lookup: testLookup})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Start()
			if err == nil {
				s.Close()
				// The UDP port may happen to be free for TCP's port and
				// vice versa; only the taken protocol must fail.
				t.Fatalf("Start succeeded on %s", tt.listen)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error %q, want it to contain %q", err, tt.want)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close after failed Start: %v", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(Config{Zone: "default", Listen: "127.0.0.1:0", Lookup: testLookup})
	if err != nil {
		t.Fatal(err)
	}
	if u, c := s.Addr(); u != nil || c != nil {
		t.Errorf("Addr before Start = %v, %v", u, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	deadline := time.Now().Add(2 * time.Second)
	for {
		if u, _ := s.Addr(); u != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server never listened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	u, c := s.Addr()
	for _, network := range []string{"udp", "tcp"} {
		addr := u.String()
		if network == "tcp" {
			addr = c.String()
		}
		if r := exchange(t, network, addr, question("web.", miekg.TypeA)); firstA(r) != "10.88.0.2" {
			t.Errorf("%s answer %v", network, r)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
	// The sockets are really gone.
	if l, err := net.Listen("tcp", c.String()); err != nil {
		t.Errorf("tcp port still bound after Close: %v", err)
	} else {
		l.Close()
	}
}

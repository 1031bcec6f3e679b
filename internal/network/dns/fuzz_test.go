package dns

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// recorder is a ResponseWriter that keeps what the handler writes, packed
// as it would go on the wire.
type recorder struct {
	tcp     bool
	msgs    [][]byte
	packErr error
}

func (r *recorder) LocalAddr() net.Addr  { return r.addr(53) }
func (r *recorder) RemoteAddr() net.Addr { return r.addr(40000) }

func (r *recorder) addr(port int) net.Addr {
	ip := net.IPv4(127, 0, 0, 1)
	if r.tcp {
		return &net.TCPAddr{IP: ip, Port: port}
	}
	return &net.UDPAddr{IP: ip, Port: port}
}

func (r *recorder) WriteMsg(m *miekg.Msg) error {
	b, err := m.Pack()
	if err != nil {
		r.packErr = err
		return err
	}
	r.msgs = append(r.msgs, b)
	return nil
}

func (r *recorder) Write(b []byte) (int, error) {
	r.msgs = append(r.msgs, append([]byte(nil), b...))
	return len(b), nil
}

func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

func FuzzHandle(f *testing.F) {
	seeds := []*miekg.Msg{
		question("web.", miekg.TypeA),
		question("WEB.default.", miekg.TypeAAAA),
		question("nope.default.", miekg.TypeA),
		question("2.0.88.10.in-addr.arpa.", miekg.TypePTR),
		question("example.com.", miekg.TypeA),
		question("deny.example.", miekg.TypeA),
		question("example.com.", miekg.TypeTXT).SetEdns0(4096, true),
		question("default.", miekg.TypeANY).SetEdns0(100, false),
	}
	multi := question("web.", miekg.TypeA)
	multi.Question = append(multi.Question, multi.Question[0])
	seeds = append(seeds, multi)
	for _, m := range seeds {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\xc0\x0c\x00\x01\x00\x01"))

	// The upstream echoes the question with an answer; it is on loopback
	// and accepts anything so the forwarding path is exercised too.
	up := &fakeUpstream{ip: "127.0.0.1", fn: func(network string, w miekg.ResponseWriter, r *miekg.Msg) {
		if len(r.Question) == 0 {
			return
		}
		answerA(30, "192.0.2.1")(network, w, r)
	}}
	port := startFakes(f, up)
	dir := f.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	writeResolvConf(f, resolv, "127.0.0.1")
	log, errs := newErrLog()
	s, err := New(Config{
		Zone:         "default",
		Listen:       "127.0.0.4:53",
		Lookup:       testLookup,
		Reverse:      testReverse,
		ResolvConf:   resolv,
		UpstreamPort: port,
		Allow:        func(name string) bool { return !strings.Contains(name, "deny") },
		OnAnswer:     func(string, []netip.Addr, time.Duration) {},
		Log:          log,
		Timeout:      100 * time.Millisecond,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, tcp := range []bool{false, true} {
			req := new(miekg.Msg)
			if err := req.Unpack(data); err != nil {
				return // miekg's server drops or FORMERRs these before us
			}
			rec := &recorder{tcp: tcp}
			s.handle(rec, req)

			if e := errs(); len(e) > 0 {
				t.Fatalf("handler logged errors: %q", e)
			}
			if rec.packErr != nil {
				t.Fatalf("reply does not pack: %v", rec.packErr)
			}
			if len(rec.msgs) > 1 {
				t.Fatalf("%d replies, want at most one", len(rec.msgs))
			}
			if req.Response {
				if len(rec.msgs) != 0 {
					t.Fatal("answered a response")
				}
				continue
			}
			if len(rec.msgs) == 0 {
				t.Fatal("no reply to a query")
			}
			reply := new(miekg.Msg)
			if err := reply.Unpack(rec.msgs[0]); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if reply.Id != req.Id || !reply.Response {
				t.Fatalf("reply id=%d qr=%v for query id=%d", reply.Id, reply.Response, req.Id)
			}
			if limit := max(udpLimit(req), miekg.MinMsgSize); !tcp && req.IsTsig() == nil && len(rec.msgs[0]) > limit {
				t.Fatalf("udp reply is %d bytes, client allows %d", len(rec.msgs[0]), limit)
			}
		}
	})
}

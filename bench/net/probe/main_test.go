package main

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// The probe's hand-made DNS wire format against miekg's: its query must
// parse, and it must find the A record behind a compressed CNAME.
func TestQueryAndAnswer(t *testing.T) {
	q, err := query(0x1234, "3.nb-open-r0.fresh.bench.test")
	if err != nil {
		t.Fatal(err)
	}
	var m dns.Msg
	if err := m.Unpack(q); err != nil {
		t.Fatalf("query does not parse: %v", err)
	}
	if m.Id != 0x1234 || !m.RecursionDesired || len(m.Question) != 1 ||
		m.Question[0].Name != "3.nb-open-r0.fresh.bench.test." || m.Question[0].Qtype != dns.TypeA {
		t.Fatalf("query: %v", &m)
	}
	r := new(dns.Msg).SetReply(&m)
	r.Compress = true
	name := m.Question[0].Name
	r.Answer = []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "web.bench.test."},
		&dns.A{Hdr: dns.RR_Header{Name: "web.bench.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(198, 18, 1, 10)},
	}
	b, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	a, ok, err := answerA(0x1234, b)
	if !ok || err != nil || a != [4]byte{198, 18, 1, 10} {
		t.Fatalf("answerA = %v %v %v", a, ok, err)
	}
	if _, ok, _ := answerA(0x1235, b); ok {
		t.Fatal("a reply to another id was taken")
	}
	r.Answer, r.Rcode = nil, dns.RcodeNameError
	b, _ = r.Pack()
	if _, ok, err := answerA(0x1234, b); !ok || err == nil {
		t.Fatalf("NXDOMAIN: ok %v err %v", ok, err)
	}
	for i := range b { // truncated replies must not panic
		_, _, _ = answerA(0x1234, b[:i])
	}
}

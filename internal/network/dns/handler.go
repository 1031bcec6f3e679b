package dns

import (
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"

	miekg "github.com/miekg/dns"
)

// ednsUDPSize is the payload size we advertise, in our own replies and
// upstream; 1232 avoids IP fragmentation on ordinary paths.
const ednsUDPSize = 1232

// handle serves one query that miekg has already unpacked; it is also the
// entry point the fuzz test drives.
func (s *Server) handle(w miekg.ResponseWriter, req *miekg.Msg) {
	defer func() {
		if p := recover(); p != nil {
			// A bad packet must not take down the host daemon, but the bug
			// must be loud.
			s.log.Error("dns handler panic", "panic", p, "stack", string(debug.Stack()))
			m := new(miekg.Msg)
			m.SetRcode(req, miekg.RcodeServerFailure)
			_ = w.WriteMsg(m)
		}
	}()

	// Never answer a response: that is how reflection loops start.
	if req.Response {
		return
	}
	if req.Opcode != miekg.OpcodeQuery {
		s.write(w, req, s.reply(req, miekg.RcodeNotImplemented))
		return
	}
	if len(req.Question) != 1 {
		s.write(w, req, new(miekg.Msg).SetRcodeFormatError(req))
		return
	}
	q := req.Question[0]
	if _, ok := miekg.IsDomainName(q.Name); !ok || !miekg.IsFqdn(q.Name) {
		s.write(w, req, new(miekg.Msg).SetRcodeFormatError(req))
		return
	}
	name := strings.ToLower(q.Name)
	if m := s.answerLocal(req, q, name); m != nil {
		s.write(w, req, m)
		return
	}
	s.write(w, req, s.forward(req, name, isTCP(w)))
}

// reply starts a response to req with the given rcode, echoing EDNS0 when
// the client used it (RFC 6891 wants an OPT back).
func (s *Server) reply(req *miekg.Msg, rcode int) *miekg.Msg {
	m := new(miekg.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsUDPSize, opt.Do())
	}
	return m
}

// write sends m, shrinking UDP replies to what the client said it accepts.
func (s *Server) write(w miekg.ResponseWriter, req, m *miekg.Msg) {
	if isTCP(w) {
		m.Compress = true
	} else {
		m.Truncate(udpLimit(req))
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns write reply failed", "remote", w.RemoteAddr(), "err", err)
	}
}

func isTCP(w miekg.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

// udpLimit is the client's advertised UDP payload size; Truncate raises
// anything below 512 to 512.
func udpLimit(req *miekg.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return miekg.MinMsgSize
}

// answerLocal answers names this network owns and returns nil for names
// that must be forwarded. name is q.Name in lower case.
func (s *Server) answerLocal(req *miekg.Msg, q miekg.Question, name string) *miekg.Msg {
	if q.Qtype == miekg.TypePTR && s.cfg.Reverse != nil {
		if ip, ok := parseReverse(name); ok {
			if vm, ok := s.cfg.Reverse(ip); ok {
				m := s.reply(req, miekg.RcodeSuccess)
				m.Authoritative = true
				m.Answer = []miekg.RR{&miekg.PTR{
					Hdr: header(q.Name, miekg.TypePTR),
					Ptr: miekg.Fqdn(strings.ToLower(vm) + "." + s.zone),
				}}
				return m
			}
		}
		// Other addresses (including other private ones) are the host
		// resolver's business.
	}

	vm, apex, local := s.classify(name)
	if !local {
		return nil
	}
	m := s.reply(req, miekg.RcodeSuccess)
	m.Authoritative = true
	var addr netip.Addr
	found := false
	if vm != "" {
		addr, found = s.cfg.Lookup(vm)
	}
	if !found {
		if !apex {
			m.Rcode = miekg.RcodeNameError
		}
		return m
	}
	if q.Qclass != miekg.ClassINET && q.Qclass != miekg.ClassANY {
		return m
	}
	addr = addr.Unmap()
	wantAny := q.Qtype == miekg.TypeANY
	switch {
	case addr.Is4() && (q.Qtype == miekg.TypeA || wantAny):
		m.Answer = []miekg.RR{&miekg.A{Hdr: header(q.Name, miekg.TypeA), A: addr.AsSlice()}}
	case addr.Is6() && (q.Qtype == miekg.TypeAAAA || wantAny):
		m.Answer = []miekg.RR{&miekg.AAAA{Hdr: header(q.Name, miekg.TypeAAAA), AAAA: addr.AsSlice()}}
	}
	// Any other type for an existing name is NOERROR with no data.
	return m
}

// classify decides whether name (lower case, fully qualified) is ours. vm
// is the label to look up ("" if there is none), apex reports the zone name
// itself (which exists, so it is NODATA rather than NXDOMAIN).
func (s *Server) classify(name string) (vm string, apex, local bool) {
	labels := miekg.SplitDomainName(name)
	n, z := len(labels), len(s.zoneLabels)
	inZone := n >= z && slices.Equal(labels[n-z:], s.zoneLabels)
	switch {
	case inZone && n == z:
		// A VM may share the zone's name; let it win.
		if n == 1 {
			vm = labels[0]
		}
		return vm, true, true
	case inZone && n == z+1:
		return labels[0], false, true
	case inZone:
		return "", false, true
	case n == 1:
		// Single-label names only make sense locally; forwarding them would
		// leak VM typos to the host's resolvers.
		return labels[0], false, true
	}
	return "", false, false
}

// parseReverse turns "4.3.2.1.in-addr.arpa." into 1.2.3.4.
func parseReverse(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	slices.Reverse(parts)
	ip, err := netip.ParseAddr(strings.Join(parts, "."))
	if err != nil || !ip.Is4() {
		return netip.Addr{}, false
	}
	return ip, true
}

func header(name string, rrtype uint16) miekg.RR_Header {
	return miekg.RR_Header{Name: name, Rrtype: rrtype, Class: miekg.ClassINET, Ttl: localTTL}
}

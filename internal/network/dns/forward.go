package dns

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	miekg "github.com/miekg/dns"
)

// forward answers req from the host's upstream servers. name is the query
// name in lower case; tcp says how the client reached us.
func (s *Server) forward(req *miekg.Msg, name string, tcp bool) *miekg.Msg {
	host := strings.TrimSuffix(name, ".")
	// Egress policy hook: a denied name must not even reach upstream, or the
	// query itself could leak data.
	if s.cfg.Allow != nil && !s.cfg.Allow(host) {
		s.log.Debug("dns query denied by policy", "name", host)
		return s.reply(req, miekg.RcodeNameError)
	}

	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		// Failing fast keeps a flood from piling up goroutines and sockets.
		s.log.Debug("dns forward refused: too many in-flight queries", "name", host)
		return s.reply(req, miekg.RcodeServerFailure)
	}

	servers := s.up.servers()
	if len(servers) == 0 {
		s.log.Debug("dns forward failed: no usable upstream server", "name", host, "resolv_conf", s.cfg.ResolvConf)
		return s.reply(req, miekg.RcodeServerFailure)
	}

	up := req.Copy()
	// A fresh ID per upstream query: the client's is chosen by the VM and
	// would make spoofed upstream answers easier to match.
	up.Id = miekg.Id()
	if opt := up.IsEdns0(); opt != nil && opt.UDPSize() < ednsUDPSize {
		// Ask for more than a small client accepts; write truncates for it.
		opt.SetUDPSize(ednsUDPSize)
	}

	var fallback *miekg.Msg
	for _, addr := range servers {
		resp, err := s.exchange(up, addr, tcp)
		if err != nil {
			s.log.Debug("dns upstream failed", "name", host, "server", addr, "err", err)
			if s.ctx.Err() != nil {
				break
			}
			continue
		}
		if resp.Rcode == miekg.RcodeServerFailure || resp.Rcode == miekg.RcodeRefused {
			// Another server may do better; keep this answer in case none does.
			s.log.Debug("dns upstream error answer", "name", host, "server", addr, "rcode", miekg.RcodeToString[resp.Rcode])
			fallback = resp
			continue
		}
		return s.finish(req, resp, host)
	}
	if fallback != nil {
		return s.finish(req, fallback, host)
	}
	return s.reply(req, miekg.RcodeServerFailure)
}

// finish turns an upstream answer into the reply for req.
func (s *Server) finish(req, resp *miekg.Msg, host string) *miekg.Msg {
	resp.Id = req.Id
	// We recurse for the client, whatever the upstream says about itself.
	resp.RecursionAvailable = true
	s.notify(host, resp)
	return resp
}

// exchange asks one server, retrying a truncated UDP answer over TCP.
func (s *Server) exchange(q *miekg.Msg, addr string, tcp bool) (*miekg.Msg, error) {
	if tcp {
		return s.exchangeOnce(q, addr, "tcp")
	}
	resp, err := s.exchangeOnce(q, addr, "udp")
	if resp == nil || !resp.Truncated {
		return resp, err
	}
	full, terr := s.exchangeOnce(q, addr, "tcp")
	if terr == nil {
		return full, nil
	}
	if err == nil {
		// The TC bit still tells the client to retry over TCP itself.
		s.log.Debug("dns upstream tcp retry failed, passing truncated answer", "server", addr, "err", terr)
		return resp, nil
	}
	return nil, errors.Join(err, terr)
}

// exchangeOnce does one attempt. On error it may still return a message
// whose header says it was truncated, which is enough to retry over TCP.
func (s *Server) exchangeOnce(q *miekg.Msg, addr, network string) (*miekg.Msg, error) {
	c := miekg.Client{Net: network, Timeout: s.timeout, UDPSize: miekg.DefaultMsgSize}
	resp, _, err := c.ExchangeContext(s.ctx, q, addr)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", network, addr, err)
		if resp != nil && resp.Truncated {
			return resp, err
		}
		return nil, err
	}
	if err := matches(q, resp); err != nil {
		return nil, fmt.Errorf("%s %s: %w", network, addr, err)
	}
	return resp, nil
}

// matches rejects answers that are not for the question we asked.
func matches(q, resp *miekg.Msg) error {
	if !resp.Response {
		return errors.New("reply is not a response")
	}
	if len(resp.Question) != 1 {
		return fmt.Errorf("reply has %d questions", len(resp.Question))
	}
	want, got := q.Question[0], resp.Question[0]
	if got.Qtype != want.Qtype || got.Qclass != want.Qclass || !strings.EqualFold(got.Name, want.Name) {
		return fmt.Errorf("reply is for %s, not %s", got.String(), want.String())
	}
	return nil
}

// notify passes a successful forwarded answer's addresses to OnAnswer.
// The smallest TTL of the whole answer section (CNAMEs included) bounds
// how long the name-to-address mapping is valid.
func (s *Server) notify(host string, resp *miekg.Msg) {
	if s.cfg.OnAnswer == nil || resp.Rcode != miekg.RcodeSuccess {
		return
	}
	var addrs []netip.Addr
	ttl := uint32(math.MaxUint32)
	for _, rr := range resp.Answer {
		ttl = min(ttl, rr.Header().Ttl)
		switch rr := rr.(type) {
		case *miekg.A:
			if a, ok := netip.AddrFromSlice(rr.A); ok {
				addrs = append(addrs, a.Unmap())
			}
		case *miekg.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		return
	}
	s.cfg.OnAnswer(host, addrs, time.Duration(ttl)*time.Second)
}

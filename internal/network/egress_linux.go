//go:build linux

package network

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A restricted network's egress chain (jumped to for everything its VMs
// send out of the bridge):
//
//	ip daddr <deny>           counter drop
//	udp/tcp dport 53, tcp 853 counter drop   (no DNS but ours)
//	ip daddr @allow-<net>-<h> accept         (filled by our DNS server)
//	ip daddr <cidr> [dport p] accept         (--allow CIDR[:PORT])
//	ip saddr <vm>             counter drop   (one per VM: inspect's counters)
//	                          counter drop
//
// An open network's chain holds only the deny rules.

// allowSetName is the dynamic set of addresses our DNS server resolved for
// allowed names; its suffix is the policy's hash.
func allowSetName(n *Network) string {
	b, _ := json.Marshal(n.Egress)
	h := sha256.Sum256(b)
	return "allow-" + n.Name + "-" + hex.EncodeToString(h[:4])
}

// dropTag marks a VM's counter rule.
func dropTag(vm string) []byte { return []byte("drop:" + vm) }

func egressRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, n *Network, keep []nftables.SetElement) error {
	p, err := n.Egress.Compile()
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	rule := func(user []byte, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: user})
	}
	for _, d := range p.Deny {
		rule(nil, append(ip4Prefix(16, d), counterDrop()...)...)
	}
	if p.Open {
		return nil
	}
	for _, dns := range []struct {
		proto byte
		port  uint16
	}{{unix.IPPROTO_UDP, 53}, {unix.IPPROTO_TCP, 53}, {unix.IPPROTO_TCP, 853}, {unix.IPPROTO_UDP, 853}} {
		rule(nil, append(l4Port(dns.proto, dns.port), counterDrop()...)...)
	}
	set := &nftables.Set{Table: t, Name: allowSetName(n), KeyType: nftables.TypeIPAddr, HasTimeout: true}
	if err := c.AddSet(set, keep); err != nil {
		return fmt.Errorf("network %s: allow set: %w", n.Name, err)
	}
	rule(nil, append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictAccept})...)
	for _, r := range p.CIDRs {
		e := ip4Prefix(16, r.Prefix)
		if r.Port == 0 {
			rule(nil, append(e, accept0()...)...)
			continue
		}
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			rule(nil, append(append(append([]expr.Any{}, e...), l4Port(proto, r.Port)...), accept0()...)...)
		}
	}
	// Each VM's drops also record (VM, destination) in a set, so the
	// first drop per destination can be reported (DropsSeen).
	drops := &nftables.Set{Table: t, Name: dropSetName(n), KeyType: dropKeyType, Concatenation: true,
		HasTimeout: true, Dynamic: true, Timeout: dropSeenFor}
	if err := c.AddSet(drops, nil); err != nil {
		return fmt.Errorf("network %s: drop set: %w", n.Name, err)
	}
	for _, vm := range n.VMNames() {
		a, err := netip.ParseAddr(n.Attached[vm].IP)
		if err != nil {
			continue
		}
		e := append(ip4Addr(12, a),
			// saddr is in register 1 from the match; daddr goes next to it.
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Dynset{SrcRegKey: 1, SetName: drops.Name, SetID: drops.ID, Operation: unix.NFT_DYNSET_OP_ADD, Timeout: dropSeenFor})
		rule(dropTag(vm), append(e, counterDrop()...)...)
	}
	rule(nil, counterDrop()...)
	return nil
}

// allowedElements reads every allow set's live elements, keyed by set
// name, with their remaining lifetime as the timeout to re-add them with.
func allowedElements(c *nftables.Conn, table string) map[string][]nftables.SetElement {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil
	}
	out := map[string][]nftables.SetElement{}
	for _, s := range sets {
		if !strings.HasPrefix(s.Name, "allow-") {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			continue
		}
		for _, e := range els {
			if e.Expires > time.Second {
				out[s.Name] = append(out[s.Name], nftables.SetElement{Key: e.Key, Timeout: e.Expires})
			}
		}
	}
	return out
}

// AllowAddresses lets n's VMs reach addrs for ttl: the DNS server calls it
// for every answer to an allowed name, before the answer reaches the VM, so
// it is on the path of every lookup and must be cheap. Adding an element
// takes tens of microseconds; deleting one (needed to refresh an element
// already in the set on kernels that do not update a re-added element's
// timeout) takes milliseconds. So a process-local memo of what this process
// put in the set, seeded once from the kernel, decides: an address the set
// does not hold is only added; one added here with at least half its
// lifetime left is left alone; only one nearer its end is deleted and added
// again.
func (m *Manager) AllowAddresses(n *Network, addrs []netip.Addr, ttl time.Duration) error {
	if n.Mode != ModeBridge {
		return nil
	}
	if p, err := n.Egress.Compile(); err != nil || p.Open {
		return err
	}
	ttl = min(max(ttl, allowMinTTL), allowMaxTTL)
	c, err := nftables.New()
	if err != nil {
		return err
	}
	set := &nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyINet, Name: m.Table}, Name: allowSetName(n), KeyType: nftables.TypeIPAddr, HasTimeout: true}
	now := time.Now()
	memo := allowMemoFor(c, set, now)
	memo.mu.Lock()
	defer memo.mu.Unlock()
	var fresh, refresh []nftables.SetElement
	for _, a := range addrs {
		if !a.Is4() {
			continue
		}
		b := a.As4()
		el := nftables.SetElement{Key: b[:], Timeout: ttl}
		until, known := memo.until[a]
		switch {
		case !known:
			fresh = append(fresh, el)
		case until.Sub(now) >= ttl/2:
			continue
		default:
			refresh = append(refresh, el)
		}
	}
	if len(refresh) > 0 {
		// Deleting an absent element fails its batch: a batch of its own.
		_ = c.SetDeleteElements(set, refresh)
		_ = c.Flush()
	}
	els := append(fresh, refresh...)
	if len(els) == 0 {
		return nil
	}
	if err := c.SetAddElements(set, els); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		// The memo may be wrong (the set was rebuilt): forget it.
		memo.until = nil
		delete(allowMemos, set.Name)
		return fmt.Errorf("allow %v for network %s: %w", addrs, n.Name, err)
	}
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		memo.until[a] = now.Add(ttl)
	}
	return nil
}

// allowMemo is what one allow set holds as far as this process knows.
type allowMemo struct {
	mu    sync.Mutex
	until map[netip.Addr]time.Time
}

var (
	allowMemosMu sync.Mutex
	allowMemos   = map[string]*allowMemo{}
)

// allowMemoFor returns the memo of set, seeding it from the kernel's
// elements the first time (a DNS server restarted, or a set rebuilt with
// kept elements): an element found there counts as expiring when the
// kernel says, so it is refreshed the slow way when due.
func allowMemoFor(c *nftables.Conn, set *nftables.Set, now time.Time) *allowMemo {
	allowMemosMu.Lock()
	defer allowMemosMu.Unlock()
	if m, ok := allowMemos[set.Name]; ok && m.until != nil {
		return m
	}
	m := &allowMemo{until: map[netip.Addr]time.Time{}}
	if els, err := c.GetSetElements(set); err == nil {
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				// Already due: the next answer for it takes the slow path,
				// which works whatever the element's state.
				m.until[a] = now.Add(min(e.Expires, time.Second))
			}
		}
	}
	allowMemos[set.Name] = m
	return m
}

// Allowed addresses live at least this long, whatever the TTL: programs
// cache answers past their TTL, and a connection must not fail for it.
const (
	allowMinTTL = 2 * time.Minute
	allowMaxTTL = 24 * time.Hour
)

// dropSetName is the set of (VM address, destination) pairs n's policy
// dropped lately.
func dropSetName(n *Network) string { return "drops-" + n.Name }

var dropKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)

// dropSeenFor is how long a dropped destination stays in the drop set:
// within it, more drops to it are not reported again.
const dropSeenFor = time.Hour

// DropsSeen lists the destinations n's policy dropped for each VM within
// the last dropSeenFor, newest first.
func (m *Manager) DropsSeen(n *Network) []Drop {
	c, err := nftables.New()
	if err != nil {
		return nil
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: m.Table}
	set := &nftables.Set{Table: t, Name: dropSetName(n), KeyType: dropKeyType, Concatenation: true}
	els, err := c.GetSetElements(set)
	if err != nil {
		return nil
	}
	byIP := map[netip.Addr]string{}
	for vm, a := range n.Attached {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			byIP[ip] = vm
		}
	}
	var out []Drop
	for _, e := range els {
		if len(e.Key) < 8 {
			continue
		}
		src, _ := netip.AddrFromSlice(e.Key[0:4])
		dst, _ := netip.AddrFromSlice(e.Key[4:8])
		d := Drop{VM: byIP[src], Source: src.String(), Destination: dst.String()}
		if e.Expires > 0 {
			d.FirstSeen = time.Now().Add(e.Expires - dropSeenFor).UTC().Truncate(time.Second)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstSeen.After(out[j].FirstSeen) })
	return out
}

// DropCounters returns per-VM dropped packet counts on network n.
func (m *Manager) DropCounters(n *Network) map[string]uint64 {
	c, err := nftables.New()
	if err != nil {
		return nil
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: m.Table}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "egress-" + n.Name, Table: t})
	if err != nil {
		return nil
	}
	out := map[string]uint64{}
	for _, r := range rules {
		vm, ok := strings.CutPrefix(string(r.UserData), "drop:")
		if !ok {
			continue
		}
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out[vm] = ctr.Packets
			}
		}
	}
	return out
}

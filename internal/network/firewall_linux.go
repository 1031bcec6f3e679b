//go:build linux

package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The firewall is one nftables table of our own (inet family), rebuilt as a
// whole from the network records in a single transaction whenever a network
// changes: nothing else's rules are read, flushed or rewritten. Per bridged
// network it
//   - lets the network's VMs talk to each other, and to nothing on another
//     of our networks;
//   - lets them reach the host only for DNS on the gateway;
//   - lets them out through NAT unless the network is internal, through a
//     per-network egress chain (empty today: the egress-policy hook);
//   - lets nothing in from outside but published ports' replies;
//   - drops their IPv6, which the guest has switched off anyway.
//
// Docker sets the FORWARD policy to DROP in its own (iptables) table, and an
// accept in our table cannot override another table's drop. Docker's
// sanctioned place for that is its DOCKER-USER chain: we add one accept per
// direction for our interfaces there, and our own table then decides.

// ruleset renders the table for nets.
func ruleset(c *nftables.Conn, table string, nets []*Network, keep map[string][]nftables.SetElement) error {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	accept := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	rule := func(ch *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	// Replies to what was allowed, on our interfaces only.
	rule(forward, append(ifPrefix(expr.MetaKeyIIFNAME, LinkPrefix), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, accept0())...)...)
	rule(forward, append(ifPrefix(expr.MetaKeyOIFNAME, LinkPrefix), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, accept0())...)...)
	rule(forward, append(ifPrefix(expr.MetaKeyIIFNAME, LinkPrefix), append(nfproto(unix.NFPROTO_IPV6), counterDrop()...)...)...)
	for _, n := range nets {
		if n.Mode != ModeBridge || n.Bridge == "" {
			continue
		}
		subnet, err := netip.ParsePrefix(n.Subnet)
		if err != nil {
			return fmt.Errorf("network %s: bad subnet %q", n.Name, n.Subnet)
		}
		gw, err := netip.ParseAddr(n.Gateway)
		if err != nil {
			return fmt.Errorf("network %s: bad gateway %q", n.Name, n.Gateway)
		}
		br := n.Bridge
		egress := c.AddChain(&nftables.Chain{Name: "egress-" + n.Name, Table: t})
		if err := egressRules(c, t, egress, n, keep[allowSetName(n)]); err != nil {
			return err
		}

		rule(input, append(ifEq(expr.MetaKeyIIFNAME, br), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, accept0())...)...)
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			e := ifEq(expr.MetaKeyIIFNAME, br)
			e = append(e, ip4Addr(16, gw)...)
			e = append(e, l4Port(proto, 53)...)
			rule(input, append(e, accept0()...)...)
		}
		rule(input, append(ifEq(expr.MetaKeyIIFNAME, br), counterDrop()...)...)

		rule(forward, append(ifEq(expr.MetaKeyIIFNAME, br), append(ifEq(expr.MetaKeyOIFNAME, br), accept0()...)...)...)
		rule(forward, append(ifEq(expr.MetaKeyIIFNAME, br), append(ifPrefix(expr.MetaKeyOIFNAME, LinkPrefix), counterDrop()...)...)...)
		if n.Internal {
			rule(forward, append(ifEq(expr.MetaKeyIIFNAME, br), counterDrop()...)...)
		} else {
			rule(forward, append(ifEq(expr.MetaKeyIIFNAME, br), &expr.Verdict{Kind: expr.VerdictJump, Chain: egress.Name})...)
			rule(forward, append(ifEq(expr.MetaKeyIIFNAME, br), accept0()...)...)
		}
		rule(forward, append(ifEq(expr.MetaKeyOIFNAME, br), ctStatus(0x20 /* IPS_DST_NAT */, accept0())...)...)
		rule(forward, append(ifEq(expr.MetaKeyOIFNAME, br), counterDrop()...)...)

		if !n.Internal {
			e := ip4Prefix(12, subnet)
			e = append(e, ifNeq(expr.MetaKeyOIFNAME, br)...)
			rule(post, append(e, &expr.Masq{})...)
		}
	}
	return nil
}

// applyFirewall replaces our table with the rules for nets (or removes it
// when no bridged network is left), in one transaction.
func applyFirewall(table string, nets []*Network) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	bridged := 0
	for _, n := range nets {
		if n.Mode == ModeBridge {
			bridged++
		}
	}
	exists, err := tableExists(c, table)
	if err != nil {
		return err
	}
	var keep map[string][]nftables.SetElement
	if exists {
		// Addresses the DNS server let in stay across a rebuild while
		// their network's policy is the same (the set's name carries the
		// policy's hash, so a changed policy starts empty).
		keep = allowedElements(c, table)
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	}
	if bridged > 0 {
		if err := ruleset(c, table, nets, keep); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write table inet %s: %w", table, err)
	}
	if bridged > 0 {
		return dockerUserAllow(true)
	}
	if !anyLinkWithPrefix(LinkPrefix) {
		return dockerUserAllow(false)
	}
	return nil
}

func tableExists(c *nftables.Conn, table string) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == table {
			return true, nil
		}
	}
	return false, nil
}

// dockerUserRules are the two accepts we keep in Docker's DOCKER-USER chain.
var dockerUserRules = [][]string{
	{"-i", LinkPrefix + "+", "-j", "ACCEPT"},
	{"-o", LinkPrefix + "+", "-j", "ACCEPT"},
}

// dockerUserAllow adds (or removes) our accepts in DOCKER-USER when that
// chain exists. Docker's chains live in iptables (legacy or nft backend),
// so the iptables command is the one tool that reaches both.
func dockerUserAllow(add bool) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return nil // no iptables: no Docker rules to get past
	}
	if exec.Command(ipt, "-w", "5", "-n", "-L", "DOCKER-USER").Run() != nil {
		return nil // no Docker here (or no such chain)
	}
	for _, r := range dockerUserRules {
		present := exec.Command(ipt, append([]string{"-w", "5", "-C", "DOCKER-USER"}, r...)...).Run() == nil
		var args []string
		switch {
		case add && !present:
			args = append([]string{"-w", "5", "-I", "DOCKER-USER"}, r...)
		case !add && present:
			args = append([]string{"-w", "5", "-D", "DOCKER-USER"}, r...)
		default:
			continue
		}
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// dockerForwardDrops reports whether iptables' FORWARD policy is DROP.
func dockerForwardDrops() (bool, error) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return false, errors.New("iptables not installed")
	}
	out, err := exec.Command(ipt, "-w", "5", "-S", "FORWARD").Output()
	if err != nil {
		return false, fmt.Errorf("iptables -S FORWARD: %w", err)
	}
	return strings.Contains(string(out), "-P FORWARD DROP"), nil
}

// Expression helpers. Register 1 throughout.

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

func ifEq(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)}}
}

func ifNeq(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(name)}}
}

// ifPrefix matches interface names starting with p (nft's "mvm*").
func ifPrefix(key expr.MetaKey, p string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p)}}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

// ip4Addr matches the IPv4 header's address at offset (12 source, 16 dest).
func ip4Addr(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]})
}

func ip4Prefix(offset uint32, p netip.Prefix) []expr.Any {
	b := p.Masked().Addr().As4()
	mask := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]})
}

func l4Port(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func ctState(bits uint32, then []expr.Any) []expr.Any {
	return append([]expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}, then...)
}

func ctStatus(bits uint32, then []expr.Any) []expr.Any {
	return append([]expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}, then...)
}

func accept0() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

func counterDrop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// nftablesUsable lists tables, which needs nf_tables and the privilege.
func nftablesUsable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTables(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// dockerUserChain reports whether iptables has Docker's DOCKER-USER chain.
func dockerUserChain() bool {
	ipt, err := exec.LookPath("iptables")
	return err == nil && exec.Command(ipt, "-w", "5", "-n", "-L", "DOCKER-USER").Run() == nil
}

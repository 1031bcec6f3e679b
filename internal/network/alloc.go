package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
)

// subnetPools are where automatic subnets come from: /24s inside each, in
// order. They avoid Docker's defaults (172.17-31/16, 192.168/16) and the
// usual home and VPN ranges.
var subnetPools = []netip.Prefix{
	netip.MustParsePrefix("10.88.0.0/16"),
	netip.MustParsePrefix("10.89.0.0/16"),
	netip.MustParsePrefix("10.133.0.0/16"),
}

// overlaps reports whether two prefixes share any address.
func overlaps(a, b netip.Prefix) bool {
	return a.Contains(b.Masked().Addr()) || b.Contains(a.Masked().Addr())
}

// conflict returns the first of taken that overlaps p.
func conflict(p netip.Prefix, taken []Occupied) (Occupied, bool) {
	for _, t := range taken {
		if overlaps(p, t.Prefix) {
			return t, true
		}
	}
	return Occupied{}, false
}

// Occupied is a prefix already in use on the host or by another network,
// with who uses it, for error messages.
type Occupied struct {
	Prefix netip.Prefix
	By     string
}

// pickSubnet returns the first /24 of the pools that collides with nothing.
func pickSubnet(taken []Occupied) (netip.Prefix, error) {
	for _, pool := range subnetPools {
		base := pool.Addr().As4()
		for i := 0; i < 1<<(24-pool.Bits()); i++ {
			b := base
			b[2] += byte(i)
			p := netip.PrefixFrom(netip.AddrFrom4(b), 24)
			if _, bad := conflict(p, taken); !bad {
				return p, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %v: give one with --subnet", subnetPools)
}

// checkSubnet validates a user-given subnet and refuses one that collides.
func checkSubnet(s string, taken []Occupied) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("--subnet %q: want an IPv4 CIDR such as 10.90.0.0/24", s)
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("--subnet %s: prefix length must be /16 to /29", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("--subnet %s: host bits set; did you mean %s?", s, p.Masked())
	}
	if a := p.Addr(); a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
		return netip.Prefix{}, fmt.Errorf("--subnet %s: not a unicast range a network can use", s)
	}
	if t, bad := conflict(p, taken); bad {
		return netip.Prefix{}, fmt.Errorf("--subnet %s collides with %s (%s): choose another range", s, t.Prefix, t.By)
	}
	return p, nil
}

// gatewayOf is the host's address on the network: the first host address.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// allocIP returns the lowest free host address (after the gateway).
func allocIP(n *Network) (netip.Addr, error) {
	p, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network %s: bad subnet %q", n.Name, n.Subnet)
	}
	used := map[netip.Addr]bool{}
	for _, a := range n.Attached {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			used[ip] = true
		}
	}
	gw := gatewayOf(p)
	for ip := gw.Next(); p.Contains(ip); ip = ip.Next() {
		if !p.Contains(ip.Next()) {
			break // broadcast
		}
		if !used[ip] {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("network %s: no free address left in %s (%d VMs attached)", n.Name, n.Subnet, len(n.Attached))
}

// vmMAC is the VM's MAC on a network: locally administered, unicast, and
// the same every time for the same VM name, so a restart keeps it.
// Collisions within the network are resolved by rehashing.
func vmMAC(n *Network, vm string) string {
	used := map[string]bool{}
	for name, a := range n.Attached {
		if name != vm {
			used[a.MAC] = true
		}
	}
	for i := 0; ; i++ {
		h := sha256.Sum256(fmt.Appendf(nil, "mvm-mac\x00%s\x00%s\x00%d", n.Name, vm, i))
		mac := net.HardwareAddr{0x02, 0x6d, h[0], h[1], h[2], h[3]}.String()
		if !used[mac] {
			return mac
		}
	}
}

// linkName derives a stable interface name (at most 15 bytes) from parts;
// every name starts with "mvm" so rules can match all of ours by prefix.
func linkName(kind byte, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "mvm" + string(kind) + hex.EncodeToString(h.Sum(nil))[:10]
}

// LinkPrefix starts every link mvm creates.
const LinkPrefix = "mvm"

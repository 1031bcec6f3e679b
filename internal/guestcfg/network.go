package guestcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Network is how the agent configures the guest's network. There is no DHCP:
// the host allocates every address and the agent applies it with netlink.
// A nil Network means the VM has no NIC (only lo).
type Network struct {
	Interfaces []Interface `json:"interfaces"`
	// DNS servers for /etc/resolv.conf, in order.
	DNS []string `json:"dns,omitempty"`
	// Search domains for /etc/resolv.conf (the network's name, so "web"
	// and "web.<network>" both resolve).
	Search []string `json:"search,omitempty"`
	// Hosts are extra /etc/hosts lines (the VM's own names).
	Hosts []HostEntry `json:"hosts,omitempty"`
	// IPv6 false switches IPv6 off in the guest explicitly, so nothing is
	// half-open: no SLAAC address, no route the host does not police.
	IPv6 bool `json:"ipv6,omitempty"`
}

// Interface is one NIC, found by its MAC address.
type Interface struct {
	MAC     string `json:"mac"`
	Address string `json:"address"`           // CIDR, e.g. 10.88.0.5/24
	Gateway string `json:"gateway,omitempty"` // default route; empty on internal networks
	MTU     int    `json:"mtu,omitempty"`
}

// HostEntry is one /etc/hosts line.
type HostEntry struct {
	IP    string   `json:"ip"`
	Names []string `json:"names"`
}

// MaxInterfaces bounds Network.Interfaces.
const MaxInterfaces = 8

// Validate checks a network config from the (untrusted) config drive or the
// post-restore request.
func (n *Network) Validate() error {
	if n == nil {
		return nil
	}
	if len(n.Interfaces) == 0 || len(n.Interfaces) > MaxInterfaces {
		return fmt.Errorf("network: %d interfaces, want 1 to %d", len(n.Interfaces), MaxInterfaces)
	}
	for i, ifc := range n.Interfaces {
		if err := ifc.validate(); err != nil {
			return fmt.Errorf("network: interface %d: %w", i, err)
		}
	}
	if len(n.DNS) > 3 {
		return errors.New("network: at most 3 DNS servers")
	}
	for _, d := range n.DNS {
		if a, err := netip.ParseAddr(d); err != nil || a.Zone() != "" {
			return fmt.Errorf("network: dns %q: not an IP address", d)
		}
	}
	if len(n.Search) > 6 {
		return errors.New("network: at most 6 search domains")
	}
	for _, s := range n.Search {
		if !validDomain(s) {
			return fmt.Errorf("network: search domain %q is not a domain name", s)
		}
	}
	if len(n.Hosts) > 64 {
		return errors.New("network: at most 64 hosts entries")
	}
	for _, h := range n.Hosts {
		if a, err := netip.ParseAddr(h.IP); err != nil || a.Zone() != "" {
			return fmt.Errorf("network: hosts entry %q: not an IP address", h.IP)
		}
		if len(h.Names) == 0 || len(h.Names) > 8 {
			return fmt.Errorf("network: hosts entry %s: 1 to 8 names", h.IP)
		}
		for _, name := range h.Names {
			if !validDomain(name) {
				return fmt.Errorf("network: hosts entry %s: %q is not a host name", h.IP, name)
			}
		}
	}
	return nil
}

func (i Interface) validate() error {
	hw, err := net.ParseMAC(i.MAC)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("mac %q: not an Ethernet address", i.MAC)
	}
	p, err := netip.ParsePrefix(i.Address)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
		return fmt.Errorf("address %q: want an IPv4 CIDR with a /8 to /30 prefix", i.Address)
	}
	if i.Gateway != "" {
		g, err := netip.ParseAddr(i.Gateway)
		if err != nil || !p.Masked().Contains(g) || g == p.Addr() {
			return fmt.Errorf("gateway %q: want another address inside %s", i.Gateway, i.Address)
		}
	}
	if i.MTU != 0 && (i.MTU < 576 || i.MTU > 65520) {
		return fmt.Errorf("mtu %d: want 576 to 65520", i.MTU)
	}
	return nil
}

// validDomain accepts lower-case DNS names of letters, digits and '-'.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !hostnameRE.MatchString(label) {
			return false
		}
	}
	return true
}

//go:build linux

package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// procSys is where sysctls are written; a variable so tests can look elsewhere.
var procSys = "/proc/sys"

// hostOccupied lists every IPv4 prefix the host already routes or has an
// address in (Docker's bridges included: they are routes), except default
// routes and the links own names (this state dir's bridges, whose subnets
// the records already hold). Bridges of another state dir (another user,
// a test) look like ours by prefix but count as taken.
func hostOccupied(own map[string]bool) ([]Occupied, error) {
	var out []Occupied
	links := map[int]string{}
	if ls, err := netlink.LinkList(); err == nil {
		for _, l := range ls {
			links[l.Attrs().Index] = l.Attrs().Name
		}
	}
	ours := func(idx int) bool { return own[links[idx]] }
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || ours(r.LinkIndex) {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || p.Addr().IsLoopback() || p.Addr().IsMulticast() {
			continue
		}
		dev := links[r.LinkIndex]
		if dev == "" {
			dev = "a route"
		}
		out = append(out, Occupied{Prefix: p, By: "route on " + dev})
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ours(a.LinkIndex) || a.IP.IsLoopback() {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if ok {
			out = append(out, Occupied{Prefix: p.Masked(), By: "address on " + links[a.LinkIndex]})
		}
	}
	return out, nil
}

// subnetHolder names a link other than self with an address inside p: two
// bridges on one subnet split its routes, and the one listed first wins.
func subnetHolder(p netip.Prefix, self string) (string, bool) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", false
	}
	for _, a := range addrs {
		q, ok := prefixOf(a.IPNet)
		if !ok || !q.Overlaps(p) {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil || l.Attrs().Name == self {
			continue
		}
		return l.Attrs().Name, true
	}
	return "", false
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// uplinkMTU is the MTU of the link the default route leaves by; a guest
// with a larger MTU than its path black-holes full-size packets.
func uplinkMTU() int {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 1500
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU >= 576 {
			return l.Attrs().MTU
		}
	}
	return 1500
}

// ensureBridge creates n's bridge if missing, gives it the gateway address
// and brings it up. IPv6 is off on it: our rules police IPv4 only.
func ensureBridge(n *Network) error {
	p, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return fmt.Errorf("network %s: bad subnet %q", n.Name, n.Subnet)
	}
	l, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge, MTU: n.MTU, HardwareAddr: bridgeMAC(n)}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		if l, err = netlink.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
		}
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return fmt.Errorf("network %s: %s exists but is a %s, not a bridge", n.Name, n.Bridge, l.Type())
	}
	// A bridge without a MAC of its own takes its lowest port's, so every
	// TAP that comes or goes could change the gateway's MAC under the VMs'
	// ARP caches (their DNS then times out until the entry expires).
	if mac := bridgeMAC(n); l.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("set %s's MAC: %w", n.Bridge, err)
		}
	}
	_ = writeSysctl("net/ipv6/conf/"+n.Bridge+"/disable_ipv6", "1")
	if other, ok := subnetHolder(p, n.Bridge); ok {
		return fmt.Errorf("network %s: its subnet %s is now in use on %s (another mvm state dir or program took it): remove that, or recreate this network (mvmctl network rm %s; mvmctl network create %s --subnet ...)", n.Name, n.Subnet, other, n.Name, n.Name)
	}
	gw := netip.MustParseAddr(n.Gateway)
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr.IPNet, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", n.Bridge, err)
	}
	if !n.Internal {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return fmt.Errorf("enable IPv4 forwarding (needed for NAT): %w", err)
		}
	}
	return nil
}

// ensureTAP creates a's TAP (persistent, so QEMU opens it by name without
// privileges of its own), enslaves it to n's bridge and brings it up.
func ensureTAP(n *Network, a *Attachment) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	l, err := netlink.LinkByName(a.TAP)
	if err != nil {
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: a.TAP, MTU: n.MTU},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			Queues:    1,
		}
		if err := netlink.LinkAdd(tap); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create tap %s: %w", a.TAP, err)
		}
		// LinkAdd keeps the queue's descriptor open; the device persists
		// without it.
		for _, f := range tap.Fds {
			f.Close()
		}
		if l, err = netlink.LinkByName(a.TAP); err != nil {
			return fmt.Errorf("find tap %s: %w", a.TAP, err)
		}
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", a.TAP, n.Bridge, err)
		}
	}
	if n.MTU > 0 && l.Attrs().MTU != n.MTU {
		_ = netlink.LinkSetMTU(l, n.MTU)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", a.TAP, err)
	}
	return nil
}

// deleteLink removes one of our links; a missing one is fine.
func deleteLink(name string) error {
	if !strings.HasPrefix(name, LinkPrefix) {
		return fmt.Errorf("refusing to delete %q: not a link mvm created", name)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// linkExists reports whether a link of that name exists.
func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// anyLinkWithPrefix reports whether any link's name starts with p.
func anyLinkWithPrefix(p string) bool {
	ls, err := netlink.LinkList()
	if err != nil {
		return true // unknown: assume so, and keep shared rules
	}
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, p) {
			return true
		}
	}
	return false
}

func writeSysctl(key, val string) error {
	path := filepath.Join(procSys, key)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == val {
		return nil
	}
	return os.WriteFile(path, []byte(val+"\n"), 0o644)
}

func readSysctl(key string) string {
	b, err := os.ReadFile(filepath.Join(procSys, key))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// bridgeMAC is a network's gateway MAC: locally administered, stable.
func bridgeMAC(n *Network) net.HardwareAddr {
	m, _ := net.ParseMAC(vmMAC(&Network{Name: n.Name}, "\x00gateway"))
	return m
}

// Package netcfg applies a guestcfg.Network inside the guest: addresses,
// MTU, default route and the IPv6 switch with netlink, and resolv.conf and
// hosts as files. The boot path (guestinit) and the post-restore operation
// (server) share it, so a fresh VM and a restored clone end up the same way.
package netcfg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Defaults for Configurator's zero values.
const (
	DefaultEtc      = "/etc"
	DefaultProcSys  = "/proc/sys"
	DefaultLinkWait = 5 * time.Second
	pollInterval    = 10 * time.Millisecond
)

// Configurator applies a network config. The zero value works on the calling
// thread's network namespace, /etc and /proc/sys.
type Configurator struct {
	// Handle is the netlink connection to use; nil opens one in the calling
	// thread's namespace. Tests pass one opened in a scratch namespace, so
	// no call depends on which OS thread it runs on.
	Handle *netlink.Handle
	// Etc is the directory holding resolv.conf and hosts.
	Etc string
	// ProcSys is the sysctl root; tests point it at a temp dir.
	ProcSys string
	// LinkWait bounds the wait for all configured NICs to appear.
	LinkWait time.Duration
	// restoredKinds are the link types (netlink Link.Type) that may stand in
	// for a NIC whose MAC is not found; nil means "device", a driver with no
	// rtnl kind such as virtio_net. Tests widen it to the virtual link type
	// they can create.
	restoredKinds []string
	// Announce, when set, is called with each gateway once its route is
	// up (the agent sends it one datagram: see announce).
	Announce func(gw net.IP)
}

// Configure applies n with the defaults and etc as the resolv.conf/hosts
// directory.
func Configure(ctx context.Context, n *guestcfg.Network, etc string) (string, error) {
	c := Configurator{Etc: etc, Announce: announce}
	return c.Configure(ctx, n)
}

// announce sends one datagram to the gateway's discard port. Its ARP
// request is the guest's first frame: a user-mode stack outside the VMM
// (passt) learns the guest's MAC from it, so a published port answers
// before the guest has sent anything of its own; a bridge learns the port.
func announce(gw net.IP) {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: gw, Port: 9})
	if err != nil {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte{0})
	c.Close()
}

// Configure switches IPv6 off unless n asks for it, writes resolv.conf and
// hosts, then waits for each interface's link and configures it. It is
// idempotent and replaces what a restored clone inherited from its parent.
// The summary ("eth0 10.88.0.5/24 via 10.88.0.1 mtu 1500") names what was
// applied; on error it still covers the interfaces that succeeded, because
// the steps are independent and a partly configured guest is easier to debug
// than an untouched one.
func (c *Configurator) Configure(ctx context.Context, n *guestcfg.Network) (string, error) {
	if n == nil {
		return "", nil
	}
	if err := n.Validate(); err != nil {
		return "", err
	}
	hws, err := macs(n.Interfaces)
	if err != nil {
		return "", err
	}
	h := c.Handle
	if h == nil {
		// Route only: a minimal guest kernel may lack the other families
		// (xfrm, netfilter) and NewHandle would fail on them.
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return "", fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
	}

	var errs []error
	if !n.IPv6 {
		for _, name := range []string{"all", "default"} {
			if err := c.disableIPv6(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := c.writeFiles(n); err != nil {
		errs = append(errs, err)
	}

	links, err := c.waitLinks(ctx, h, hws)
	if err != nil {
		errs = append(errs, err)
	}
	var done []string
	for i, ifc := range n.Interfaces {
		if links[i] == nil {
			continue
		}
		s, err := c.configureLink(h, links[i], ifc, hws[i], n.IPv6)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.MAC, err))
			continue
		}
		done = append(done, s)
	}
	return strings.Join(done, ", "), errors.Join(errs...)
}

// macs parses the interfaces' MACs and refuses duplicates, which would have
// two configs fight over one link.
func macs(ifcs []guestcfg.Interface) ([]net.HardwareAddr, error) {
	hws := make([]net.HardwareAddr, len(ifcs))
	for i, ifc := range ifcs {
		hw, err := net.ParseMAC(ifc.MAC)
		if err != nil {
			return nil, fmt.Errorf("interface %d: %w", i, err)
		}
		for j := range i {
			if bytes.Equal(hws[j], hw) {
				return nil, fmt.Errorf("interfaces %d and %d share MAC %s", j, i, hw)
			}
		}
		hws[i] = hw
	}
	return hws, nil
}

func (c *Configurator) linkWait() time.Duration {
	if c.LinkWait > 0 {
		return c.LinkWait
	}
	return DefaultLinkWait
}

// waitLinks polls until every MAC has a link, or the wait or ctx ends: the
// NIC may be probed after the root disk. links[i] is nil for a MAC not found.
func (c *Configurator) waitLinks(ctx context.Context, h *netlink.Handle, hws []net.HardwareAddr) ([]netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, c.linkWait())
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	found := make([]netlink.Link, len(hws))
	var all []netlink.Link
	for {
		list, err := h.LinkList()
		switch {
		case errors.Is(err, netlink.ErrDumpInterrupted):
			// The link table changed mid-dump (a NIC appearing): the
			// next poll sees it whole.
		case err != nil:
			return found, fmt.Errorf("list links: %w", err)
		default:
			all = list
			found = c.match(list, hws)
			if !slices.Contains(found, nil) {
				return found, nil
			}
		}
		select {
		case <-ctx.Done():
			var missing []string
			for i, l := range found {
				if l == nil {
					missing = append(missing, hws[i].String())
				}
			}
			return found, fmt.Errorf("no link with MAC %s after %v (%v; have %s)",
				strings.Join(missing, ", "), c.linkWait(), ctx.Err(), describe(all))
		case <-tick.C:
		}
	}
}

// match finds each MAC's link. A clone restored from a snapshot keeps its
// parent's MAC, so when a single NIC is configured and the guest has exactly
// one NIC-like link, that link is the one, whatever its MAC says.
func (c *Configurator) match(links []netlink.Link, hws []net.HardwareAddr) []netlink.Link {
	found := make([]netlink.Link, len(hws))
	for i, hw := range hws {
		var pick netlink.Link
		for _, l := range links {
			if !bytes.Equal(l.Attrs().HardwareAddr, hw) {
				continue
			}
			// A bridge copies its port's MAC: prefer the NIC itself.
			if c.nicLike(l) {
				pick = l
				break
			}
			if pick == nil {
				pick = l
			}
		}
		found[i] = pick
	}
	if len(hws) == 1 && found[0] == nil {
		var nics []netlink.Link
		for _, l := range links {
			if c.nicLike(l) {
				nics = append(nics, l)
			}
		}
		if len(nics) == 1 {
			found[0] = nics[0]
		}
	}
	return found
}

// nicLike reports whether l looks like the VM's own Ethernet NIC rather than
// lo, a bridge, a tunnel or a container's veth.
func (c *Configurator) nicLike(l netlink.Link) bool {
	a := l.Attrs()
	if a.Flags&net.FlagLoopback != 0 || a.EncapType != "ether" || len(a.HardwareAddr) != 6 || a.MasterIndex != 0 {
		return false
	}
	kinds := c.restoredKinds
	if kinds == nil {
		kinds = []string{"device"}
	}
	return slices.Contains(kinds, l.Type())
}

func describe(links []netlink.Link) string {
	var b []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		b = append(b, fmt.Sprintf("%s=%s(%s)", a.Name, a.HardwareAddr, l.Type()))
	}
	if len(b) == 0 {
		return "no links but lo"
	}
	return strings.Join(b, " ")
}

// configureLink makes link carry exactly ifc: MAC, MTU, one IPv4 address,
// up, default route. Order matters: the kernel refuses a route via a gateway
// until the address is on an up link.
func (c *Configurator) configureLink(h *netlink.Handle, link netlink.Link, ifc guestcfg.Interface, hw net.HardwareAddr, ipv6 bool) (string, error) {
	name := link.Attrs().Name
	if !bytes.Equal(link.Attrs().HardwareAddr, hw) {
		if err := setMAC(h, link, hw); err != nil {
			return "", fmt.Errorf("%s: set MAC %s: %w", name, hw, err)
		}
	}
	if ifc.MTU != 0 && link.Attrs().MTU != ifc.MTU {
		if err := h.LinkSetMTU(link, ifc.MTU); err != nil {
			return "", fmt.Errorf("%s: set mtu %d: %w", name, ifc.MTU, err)
		}
	}
	if !ipv6 {
		// Before the link goes up, so it never gets a link-local address.
		if err := c.disableIPv6(name); err != nil {
			return "", err
		}
	}
	prefix, err := netip.ParsePrefix(ifc.Address)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", ifc.Address, err)
	}
	want := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)}
	if err := dropStaleAddrs(h, link, want); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("%s: add address %s: %w", name, prefix, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("%s: set up: %w", name, err)
	}
	summary := name + " " + prefix.String()
	if ifc.Gateway != "" {
		gw := net.ParseIP(ifc.Gateway)
		if gw == nil {
			return "", fmt.Errorf("gateway %q: not an IP address", ifc.Gateway)
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}
		if err := h.RouteReplace(r); err != nil {
			return "", fmt.Errorf("%s: default route via %s: %w", name, gw, err)
		}
		summary += " via " + ifc.Gateway
		if c.Announce != nil {
			c.Announce(gw)
		}
	}
	mtu := link.Attrs().MTU
	if l, err := h.LinkByIndex(link.Attrs().Index); err == nil {
		mtu = l.Attrs().MTU
	}
	return fmt.Sprintf("%s mtu %d", summary, mtu), nil
}

// setMAC changes link's hardware address. Drivers without live address
// change refuse while the link is up (EBUSY); then it goes down for the
// change and configureLink brings it back up.
func setMAC(h *netlink.Handle, link netlink.Link, hw net.HardwareAddr) error {
	err := h.LinkSetHardwareAddr(link, hw)
	if !errors.Is(err, unix.EBUSY) {
		return err
	}
	if err := h.LinkSetDown(link); err != nil {
		return fmt.Errorf("set down: %w", err)
	}
	return h.LinkSetHardwareAddr(link, hw)
}

// dropStaleAddrs removes every IPv4 address on link but want: a restored
// clone still carries its parent's.
func dropStaleAddrs(h *netlink.Handle, link netlink.Link, want *net.IPNet) error {
	var addrs []netlink.Addr
	var err error
	for range 3 {
		if addrs, err = h.AddrList(link, netlink.FAMILY_V4); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet.IP.Equal(want.IP) && bytes.Equal(a.IPNet.Mask, want.Mask) {
			continue
		}
		// EADDRNOTAVAIL: a secondary that went away with its primary.
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
		}
	}
	return nil
}

// disableIPv6 sets net.ipv6.conf.<name>.disable_ipv6. A missing file means
// a kernel without IPv6, which is already off.
func (c *Configurator) disableIPv6(name string) error {
	root := c.ProcSys
	if root == "" {
		root = DefaultProcSys
	}
	p := filepath.Join(root, "net", "ipv6", "conf", name, "disable_ipv6")
	// No O_CREATE: sysctls exist or they do not.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disable ipv6 on %s: %w", name, err)
	}
	_, err = f.WriteString("1\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disable ipv6 on %s: %w", name, err)
	}
	return nil
}

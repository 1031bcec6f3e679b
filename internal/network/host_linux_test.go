//go:build linux

package network

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread of its own in a fresh network namespace, so
// bridges, TAPs and nftables tables the test makes never touch the host's;
// the namespace disappears with the test.
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		defer func() {
			// Back to the host's namespace; only then may the thread be
			// reused. On failure the thread dies with this goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		fn()
	}()
	<-done
}

func testManager(t *testing.T) *Manager {
	dir := t.TempDir()
	m := NewManager(filepath.Join(dir, "share"), filepath.Join(dir, "state"), nil)
	m.Privileged = func() bool { return true }
	return m
}

func TestBridgeLifecycle(t *testing.T) {
	inNetns(t, func() {
		ctx := context.Background()
		// A host route the automatic subnet must avoid.
		// (A bridge: this kernel may lack the dummy driver.)
		dummy := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "uplink0", MTU: 1400}}
		if err := netlink.LinkAdd(dummy); err != nil {
			t.Fatal(err)
		}
		_ = netlink.LinkSetUp(dummy)
		addr, _ := netlink.ParseAddr("10.88.0.5/24")
		if err := netlink.AddrAdd(dummy, addr); err != nil {
			t.Fatal(err)
		}
		m := testManager(t)

		if _, err := m.Create(ctx, CreateOptions{Name: "clash", Subnet: "10.88.0.0/16"}); err == nil || !strings.Contains(err.Error(), "collides") {
			t.Fatalf("colliding subnet: got %v", err)
		}
		lease, err := m.Attach(ctx, DefaultName, "a", []Port{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"}})
		if err != nil {
			t.Fatal(err)
		}
		n := lease.Network
		if n.Subnet == "10.88.0.0/24" || n.Mode != ModeBridge {
			t.Fatalf("default network %+v: want bridge mode avoiding 10.88.0.0/24", n)
		}
		if lease.Attach.IP == "" || lease.Attach.TAP == "" {
			t.Fatalf("lease %+v", lease.Attach)
		}
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			t.Fatalf("bridge missing: %v", err)
		}
		if br.Attrs().Flags&1 == 0 {
			t.Fatal("bridge is down")
		}
		if br.Attrs().HardwareAddr.String() != bridgeMAC(n).String() {
			t.Fatalf("bridge MAC %s, want its own stable %s", br.Attrs().HardwareAddr, bridgeMAC(n))
		}
		tap, err := netlink.LinkByName(lease.Attach.TAP)
		if err != nil {
			t.Fatalf("tap missing: %v", err)
		}
		if tap.Attrs().MasterIndex != br.Attrs().Index {
			t.Fatal("tap not on the bridge")
		}
		addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IP.String() != n.Gateway {
			t.Fatalf("bridge addresses %v, want the gateway %s", addrs, n.Gateway)
		}
		// A second VM gets another address; a port clash is refused.
		if _, err := m.Attach(ctx, DefaultName, "b", []Port{{HostIP: "0.0.0.0", HostPort: 8080, GuestPort: 80, Proto: "tcp"}}); err == nil {
			t.Fatal("port published twice")
		}
		lb, err := m.Attach(ctx, DefaultName, "b", nil)
		if err != nil {
			t.Fatal(err)
		}
		if lb.Attach.IP == lease.Attach.IP || lb.Attach.MAC == lease.Attach.MAC {
			t.Fatal("two VMs share an address or MAC")
		}
		// Ports coming and going leave the gateway's MAC alone.
		if br2, _ := netlink.LinkByName(n.Bridge); br2.Attrs().HardwareAddr.String() != bridgeMAC(n).String() {
			t.Fatalf("bridge MAC changed to %s when a port was added", br2.Attrs().HardwareAddr)
		}
		// Attaching again is idempotent.
		again, err := m.Attach(ctx, DefaultName, "a", nil)
		if err != nil || again.Attach.IP != lease.Attach.IP || again.Attach.MAC != lease.Attach.MAC {
			t.Fatalf("re-attach changed the lease: %+v, %v", again, err)
		}

		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ch := range chains {
			if ch.Table.Name == m.Table {
				names = append(names, ch.Name)
			}
		}
		if got := strings.Join(names, ","); !strings.Contains(got, "forward") || !strings.Contains(got, "postrouting") || !strings.Contains(got, "egress-default") {
			t.Fatalf("chains of %s: %s", m.Table, got)
		}

		if _, err := m.Remove(ctx, DefaultName, false, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "a, b") {
			t.Fatalf("rm of a network in use: %v", err)
		}
		if _, err := m.Remove(ctx, DefaultName, true, func(vm string) bool { return vm == "b" }); err == nil || !strings.Contains(err.Error(), "running VMs: b") {
			t.Fatalf("rm -f with a running VM: %v", err)
		}
		if err := m.Detach(ctx, DefaultName, "a"); err != nil {
			t.Fatal(err)
		}
		if linkExists(lease.Attach.TAP) {
			t.Fatal("tap left after detach")
		}
		if err := m.Detach(ctx, DefaultName, "a"); err != nil {
			t.Fatalf("second detach: %v", err)
		}
		// b's record is gone: reconcile detaches it.
		if err := m.Reconcile(ctx, func(string) bool { return false }); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Remove(ctx, DefaultName, false, nil); err != nil {
			t.Fatal(err)
		}
		if linkExists(n.Bridge) || linkExists(lb.Attach.TAP) {
			t.Fatal("links left after network rm")
		}
		if ok, _ := tableExists(c, m.Table); ok {
			t.Fatal("nftables table left after the last network went")
		}
	})
}

func TestUserModeNeedsNoPrivilege(t *testing.T) {
	m := testManager(t)
	m.Privileged = func() bool { return false }
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "br", Mode: ModeBridge}); err == nil || !strings.Contains(err.Error(), "--mode user") {
		t.Fatalf("bridge without privileges: %v", err)
	}
	lease, err := m.Attach(ctx, DefaultName, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if lease.Network.Mode != ModeUser || lease.Attach.IP != UserGuestIP || lease.Attach.TAP != "" {
		t.Fatalf("unprivileged default: %+v %+v", lease.Network, lease.Attach)
	}
	g := lease.Guest()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	if g.Interfaces[0].Gateway != UserGateway || g.DNS[0] != UserDNS {
		t.Fatalf("guest config %+v", g)
	}
}

func TestEgressRules(t *testing.T) {
	inNetns(t, func() {
		ctx := context.Background()
		m := testManager(t)
		_, err := m.Create(ctx, CreateOptions{Name: "lab", Egress: &Egress{Preset: EgressNone, Allow: []string{"10.1.0.0/16:443"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Attach(ctx, "lab", "a", nil); err != nil {
			t.Fatal(err)
		}
		n, _ := m.Get("lab")
		c, _ := nftables.New()
		tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: m.Table}
		set, err := c.GetSetByName(tb, allowSetName(n))
		if err != nil {
			t.Fatalf("allow set missing: %v", err)
		}
		if err := m.AllowAddresses(n, []netip.Addr{netip.MustParseAddr("198.18.5.5")}, time.Second); err != nil {
			t.Fatal(err)
		}
		// Allowing again (a repeated answer) is fine.
		if err := m.AllowAddresses(n, []netip.Addr{netip.MustParseAddr("198.18.5.5")}, time.Minute); err != nil {
			t.Fatal(err)
		}
		els, _ := c.GetSetElements(set)
		if len(els) != 1 || els[0].Expires < time.Minute {
			t.Fatalf("set elements %+v: want one, living at least the minimum", els)
		}
		// Another VM attaching rebuilds the table: the allowed address stays.
		if _, err := m.Attach(ctx, "lab", "b", nil); err != nil {
			t.Fatal(err)
		}
		if set, err = c.GetSetByName(tb, allowSetName(n)); err != nil {
			t.Fatal(err)
		}
		if els, _ := c.GetSetElements(set); len(els) != 1 {
			t.Fatalf("rebuild lost the allowed address: %+v", els)
		}
		if got := m.DropCounters(n); len(got) != 2 {
			t.Fatalf("drop counters %v, want one per VM", got)
		}
		// A changed policy starts from nothing.
		n, err = m.Update(ctx, "lab", UpdateOptions{Egress: &Egress{Preset: EgressRegistries}})
		if err != nil {
			t.Fatal(err)
		}
		set, err = c.GetSetByName(tb, allowSetName(n))
		if err != nil {
			t.Fatal(err)
		}
		if els, _ := c.GetSetElements(set); len(els) != 0 {
			t.Fatalf("new policy kept the old policy's addresses: %+v", els)
		}
		if _, err := m.Update(ctx, "lab", UpdateOptions{Egress: &Egress{Preset: "bogus"}}); err == nil {
			t.Fatal("bad preset accepted")
		}
		for _, vm := range []string{"a", "b"} {
			_ = m.Detach(ctx, "lab", vm)
		}
		if _, err := m.Remove(ctx, "lab", false, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStateDirsShareTheHost: two state dirs (two users, or a test next to
// a real install) see each other's bridges as taken, and a network whose
// subnet another took while its bridge was gone (a reboot) refuses to come
// up rather than split the subnet's routes.
func TestStateDirsShareTheHost(t *testing.T) {
	inNetns(t, func() {
		ctx := context.Background()
		m1, m2 := testManager(t), testManager(t)
		a, err := m1.Create(ctx, CreateOptions{Name: "a"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := m2.Create(ctx, CreateOptions{Name: "b"})
		if err != nil {
			t.Fatal(err)
		}
		if a.Subnet == b.Subnet {
			t.Fatalf("two state dirs were given one subnet %s", a.Subnet)
		}
		// a's bridge goes away, as on a reboot; another state dir takes its subnet.
		if err := deleteLink(a.Bridge); err != nil {
			t.Fatal(err)
		}
		m3 := testManager(t)
		c, err := m3.Create(ctx, CreateOptions{Name: "c", Subnet: a.Subnet})
		if err != nil {
			t.Fatal(err)
		}
		_, err = m1.Attach(ctx, "a", "vm1", nil)
		if err == nil || !strings.Contains(err.Error(), "in use on "+c.Bridge) {
			t.Fatalf("plumbing a onto a subnet %s holds: got %v", c.Bridge, err)
		}
		if linkExists(a.Bridge) {
			// The failed plumb may leave an empty bridge; it must not hold the address.
			if h, ok := subnetHolder(netip.MustParsePrefix(a.Subnet), c.Bridge); ok {
				t.Fatalf("%s holds an address in %s after the refusal", h, a.Subnet)
			}
		}
	})
}

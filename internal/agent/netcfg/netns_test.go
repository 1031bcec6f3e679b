package netcfg

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// scratchNetns creates a fresh network namespace holding one Ethernet link
// called name with MAC hw, and a netlink handle bound to it, so the code
// under test works there from any thread. It returns the handle and the
// link's netlink type. Cleanup deletes the link and closes the handle and
// the namespace fd; with the last reference gone the kernel frees the
// namespace, so nothing is left on the host.
func scratchNetns(t *testing.T, name string, hw net.HardwareAddr) (*netlink.Handle, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create a network namespace")
	}
	// Unshare and setns act on this OS thread only.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		if errors.Is(err, unix.EPERM) {
			t.Skipf("needs root (CAP_NET_ADMIN) to create a network namespace: %v", err)
		}
		t.Fatalf("new netns: %v", err)
	}
	// Create the link while this thread is inside: a tap belongs to the
	// namespace of whoever opens /dev/net/tun.
	kind, linkErr := addEtherLink(name, hw)
	if err := netns.Set(orig); err != nil {
		ns.Close()
		// Still locked on purpose: the runtime retires a thread whose
		// goroutine ends locked, so it never runs anything else in ns.
		t.Fatalf("back to the original netns: %v", err)
	}
	runtime.UnlockOSThread()
	t.Cleanup(func() { ns.Close() })
	if linkErr != nil {
		t.Skipf("kernel can create neither a dummy nor a tap link: %v", linkErr)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in netns: %v", err)
	}
	t.Cleanup(h.Close)
	t.Cleanup(func() { // runs before h.Close
		if l, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(l); err != nil {
				t.Logf("delete %s: %v (freed with the namespace)", name, err)
			}
		}
	})
	return h, kind
}

// addEtherLink adds an Ethernet link in the calling thread's namespace: a
// dummy where the kernel has the driver, else a persistent tap (some
// minimal kernels have tun but neither dummy nor veth).
func addEtherLink(name string, hw net.HardwareAddr) (string, error) {
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: hw}}
	derr := netlink.LinkAdd(dummy)
	if derr == nil {
		return dummy.Type(), nil
	}
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP}
	if err := netlink.LinkAdd(tap); err != nil {
		return "", errors.Join(derr, err)
	}
	if err := netlink.LinkSetHardwareAddr(tap, hw); err != nil {
		return "", err
	}
	return tap.Type(), nil
}

// TestConfigureNetns runs the real netlink code in a scratch namespace: a
// fresh boot, the same config again, a restored clone whose NIC still has
// its parent's MAC and address, and a NIC that never shows up.
func TestConfigureNetns(t *testing.T) {
	parentMAC, _ := net.ParseMAC("02:00:0a:63:00:05")
	h, kind := scratchNetns(t, "eth0", parentMAC)
	procSys := t.TempDir()
	var sysctls []string
	for _, name := range []string{"all", "default", "eth0"} {
		sysctls = append(sysctls, mkSysctl(t, procSys, name))
	}
	etc := t.TempDir()
	c := Configurator{Handle: h, Etc: etc, ProcSys: procSys, LinkWait: time.Second, restoredKinds: []string{kind}}

	network := func(mac, addr string) *guestcfg.Network {
		return &guestcfg.Network{
			Interfaces: []guestcfg.Interface{{MAC: mac, Address: addr, Gateway: "10.99.0.1", MTU: 1400}},
			DNS:        []string{"10.99.0.1"},
			Search:     []string{"test"},
			Hosts:      []guestcfg.HostEntry{{IP: strings.Split(addr, "/")[0], Names: []string{"vm"}}},
		}
	}
	tests := []struct {
		name        string
		n           *guestcfg.Network
		wantSummary string
		wantErr     string
		wantMAC     string
		wantAddr    string
	}{
		{"boot", network("02:00:0a:63:00:05", "10.99.0.5/24"),
			"eth0 10.99.0.5/24 via 10.99.0.1 mtu 1400", "", "02:00:0a:63:00:05", "10.99.0.5/24"},
		{"again: idempotent", network("02:00:0a:63:00:05", "10.99.0.5/24"),
			"eth0 10.99.0.5/24 via 10.99.0.1 mtu 1400", "", "02:00:0a:63:00:05", "10.99.0.5/24"},
		{"restored clone", network("02:00:0a:63:00:06", "10.99.0.6/24"),
			"eth0 10.99.0.6/24 via 10.99.0.1 mtu 1400", "", "02:00:0a:63:00:06", "10.99.0.6/24"},
		{"second nic never appears", func() *guestcfg.Network {
			n := network("02:00:0a:63:00:06", "10.99.0.6/24")
			n.Interfaces = append(n.Interfaces, guestcfg.Interface{MAC: "02:00:0a:64:00:06", Address: "10.100.0.6/24"})
			return n
		}(), "eth0 10.99.0.6/24 via 10.99.0.1 mtu 1400", "no link with MAC 02:00:0a:64:00:06", "02:00:0a:63:00:06", "10.99.0.6/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			summary, err := c.Configure(ctx, tt.n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if d := time.Since(start); d > 3*c.LinkWait {
					t.Fatalf("gave up after %v, want about %v", d, c.LinkWait)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if summary != tt.wantSummary {
				t.Errorf("summary %q, want %q", summary, tt.wantSummary)
			}
			assertLink(t, h, "eth0", tt.wantMAC, tt.wantAddr, 1400, "10.99.0.1")
			for _, p := range sysctls {
				if b, _ := os.ReadFile(p); string(b) != "1\n" {
					t.Errorf("%s = %q, want 1", p, b)
				}
			}
			b, err := os.ReadFile(filepath.Join(etc, "hosts"))
			if want := strings.Split(tt.wantAddr, "/")[0] + " vm\n"; err != nil || !strings.HasSuffix(string(b), want) {
				t.Errorf("hosts = %q, %v; want it to end in %q", b, err, want)
			}
		})
	}
}

// assertLink checks, through netlink, that name has exactly one IPv4
// address (addr), the MAC, the MTU, IFF_UP and a default route via gw.
func assertLink(t *testing.T, h *netlink.Handle, name, mac, addr string, mtu int, gw string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a := l.Attrs()
	if a.HardwareAddr.String() != mac {
		t.Errorf("MAC %s, want %s", a.HardwareAddr, mac)
	}
	if a.MTU != mtu {
		t.Errorf("MTU %d, want %d", a.MTU, mtu)
	}
	if a.Flags&net.FlagUp == 0 {
		t.Errorf("flags %v: not up", a.Flags)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if !slices.Equal(got, []string{addr}) {
		t.Errorf("addresses %v, want [%s]", got, addr)
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == gw {
			return
		}
	}
	t.Errorf("no default route via %s in %v", gw, routes)
}

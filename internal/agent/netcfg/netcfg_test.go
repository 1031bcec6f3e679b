package netcfg

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestRenderResolvConf(t *testing.T) {
	const opts = "options ndots:1 timeout:2 attempts:2\n"
	tests := []struct {
		name    string
		n       guestcfg.Network
		want    string
		wantErr string
	}{
		{"search and servers", guestcfg.Network{DNS: []string{"10.88.0.1", "1.1.1.1"}, Search: []string{"default", "mvm.internal"}},
			"search default mvm.internal\nnameserver 10.88.0.1\nnameserver 1.1.1.1\n" + opts, ""},
		{"servers only", guestcfg.Network{DNS: []string{"10.88.0.1"}}, "nameserver 10.88.0.1\n" + opts, ""},
		{"nothing: still replaces the parent's", guestcfg.Network{}, opts, ""},
		{"ipv6 canonicalised", guestcfg.Network{DNS: []string{"FD00:0::1"}}, "nameserver fd00::1\n" + opts, ""},
		{"zone", guestcfg.Network{DNS: []string{"fe80::1%eth0"}}, "nameserver fe80::1%eth0\n" + opts, ""},
		{"zone smuggling a line", guestcfg.Network{DNS: []string{"fe80::1%x\nnameserver 6.6.6.6"}}, "", "zone"},
		{"not an address", guestcfg.Network{DNS: []string{"dns"}}, "", "not an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := RenderResolvConf(&tt.n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimPrefix(string(b), header); got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderHosts(t *testing.T) {
	const lo4 = "127.0.0.1 localhost\n"
	const lo6 = "::1 localhost ip6-localhost ip6-loopback\n"
	tests := []struct {
		name    string
		n       guestcfg.Network
		want    string
		wantErr string
	}{
		{"ipv4 only", guestcfg.Network{}, lo4, ""},
		{"ipv6 on", guestcfg.Network{IPv6: true}, lo4 + lo6, ""},
		{"entries", guestcfg.Network{Hosts: []guestcfg.HostEntry{
			{IP: "10.88.0.5", Names: []string{"web", "web.default"}},
			{IP: "10.88.0.6", Names: []string{"db"}},
		}}, lo4 + "10.88.0.5 web web.default\n10.88.0.6 db\n", ""},
		{"bad zone", guestcfg.Network{Hosts: []guestcfg.HostEntry{{IP: "fe80::1%a b", Names: []string{"x"}}}}, "", "zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := RenderHosts(&tt.n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimPrefix(string(b), header); got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestWriteFile: whatever is at the path (nothing, a file, a symlink to a
// file, a dangling symlink) ends up a 0644 regular file with the new text,
// a symlink's target is untouched, and no temp file is left behind.
func TestWriteFile(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir, path string) (target string)
	}{
		{"absent", func(*testing.T, string, string) string { return "" }},
		{"regular file", func(t *testing.T, _, path string) string {
			if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return ""
		}},
		{"symlink to a file", func(t *testing.T, dir, path string) string {
			target := filepath.Join(dir, "stub-resolv.conf")
			if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
			return target
		}},
		{"dangling symlink", func(t *testing.T, dir, path string) string {
			if err := os.Symlink(filepath.Join(dir, "run", "missing"), path); err != nil {
				t.Fatal(err)
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "resolv.conf")
			target := tt.setup(t, dir, path)
			if err := WriteFile(path, []byte("nameserver 10.88.0.1\n")); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
				t.Fatalf("mode %v, want a 0644 regular file", fi.Mode())
			}
			if b, _ := os.ReadFile(path); string(b) != "nameserver 10.88.0.1\n" {
				t.Fatalf("content %q", b)
			}
			if target != "" {
				if b, _ := os.ReadFile(target); string(b) != "keep\n" {
					t.Fatalf("symlink target written through: %q", b)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "run")); !os.IsNotExist(err) {
				t.Fatalf("dangling symlink followed: %v", err)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					t.Fatalf("temp file left behind: %s", e.Name())
				}
			}
		})
	}
}

// TestDisableIPv6: "1" lands in existing sysctls; a missing one (a kernel
// without IPv6) is not an error.
func TestDisableIPv6(t *testing.T) {
	root := t.TempDir()
	c := Configurator{ProcSys: root}
	p := mkSysctl(t, root, "eth0")
	for _, name := range []string{"eth0", "missing"} {
		if err := c.disableIPv6(name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "1\n" {
		t.Fatalf("disable_ipv6 = %q", b)
	}
	if _, err := os.Stat(filepath.Join(root, "net/ipv6/conf/missing")); !os.IsNotExist(err) {
		t.Fatalf("created a sysctl: %v", err)
	}
}

// mkSysctl creates a stand-in net.ipv6.conf.<name>.disable_ipv6 holding 0.
func mkSysctl(t *testing.T, root, name string) string {
	t.Helper()
	dir := filepath.Join(root, "net", "ipv6", "conf", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "disable_ipv6")
	if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMatch covers choosing links without a kernel: MAC first, then the
// restored-clone fallback, which needs one configured and one NIC-like link.
func TestMatch(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		hw, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return hw
	}
	ether := func(name, hw string) netlink.LinkAttrs {
		return netlink.LinkAttrs{Name: name, HardwareAddr: mac(hw), EncapType: "ether", Flags: net.FlagBroadcast}
	}
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", HardwareAddr: make(net.HardwareAddr, 6), EncapType: "loopback", Flags: net.FlagLoopback}}
	eth0 := &netlink.Device{LinkAttrs: ether("eth0", "02:00:00:00:00:01")}
	eth1 := &netlink.Device{LinkAttrs: ether("eth1", "02:00:00:00:00:02")}
	br0 := &netlink.Bridge{LinkAttrs: ether("br0", "02:00:00:00:00:01")}
	docker0 := &netlink.Bridge{LinkAttrs: ether("docker0", "02:42:00:00:00:01")}
	veth := &netlink.Veth{LinkAttrs: ether("veth1", "02:42:00:00:00:02")}
	enslaved := &netlink.Device{LinkAttrs: ether("eth2", "02:00:00:00:00:03")}
	enslaved.MasterIndex = 7

	tests := []struct {
		name  string
		links []netlink.Link
		want  []string // MACs to find
		got   []string // link names, "" for none
	}{
		{"by mac", []netlink.Link{lo, eth0, eth1}, []string{"02:00:00:00:00:02"}, []string{"eth1"}},
		{"nic over bridge with its mac", []netlink.Link{lo, br0, eth0}, []string{"02:00:00:00:00:01"}, []string{"eth0"}},
		{"restored clone", []netlink.Link{lo, eth0}, []string{"02:00:00:00:00:09"}, []string{"eth0"}},
		{"restored clone running docker", []netlink.Link{lo, eth0, docker0, veth}, []string{"02:00:00:00:00:09"}, []string{"eth0"}},
		{"two nics: no guessing", []netlink.Link{lo, eth0, eth1}, []string{"02:00:00:00:00:09"}, []string{""}},
		{"only lo yet", []netlink.Link{lo}, []string{"02:00:00:00:00:09"}, []string{""}},
		{"enslaved is not a candidate", []netlink.Link{lo, enslaved}, []string{"02:00:00:00:00:09"}, []string{""}},
		{"two configured: no guessing", []netlink.Link{lo, eth0}, []string{"02:00:00:00:00:01", "02:00:00:00:00:09"}, []string{"eth0", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hws []net.HardwareAddr
			for _, s := range tt.want {
				hws = append(hws, mac(s))
			}
			var c Configurator
			found := c.match(tt.links, hws)
			for i, l := range found {
				name := ""
				if l != nil {
					name = l.Attrs().Name
				}
				if name != tt.got[i] {
					t.Errorf("MAC %s: got %q, want %q", tt.want[i], name, tt.got[i])
				}
			}
		})
	}
}

func TestMACsRejectsDuplicates(t *testing.T) {
	ifc := guestcfg.Interface{MAC: "02:00:00:00:00:01", Address: "10.0.0.2/24"}
	if _, err := macs([]guestcfg.Interface{ifc, ifc}); err == nil || !strings.Contains(err.Error(), "share MAC") {
		t.Fatalf("err = %v", err)
	}
}

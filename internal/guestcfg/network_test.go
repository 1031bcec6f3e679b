package guestcfg

import (
	"bytes"
	"strings"
	"testing"
)

func validNetwork() *Network {
	return &Network{
		Interfaces: []Interface{{MAC: "02:00:0a:58:00:05", Address: "10.88.0.5/24", Gateway: "10.88.0.1", MTU: 1500}},
		DNS:        []string{"10.88.0.1"},
		Search:     []string{"default"},
		Hosts:      []HostEntry{{IP: "10.88.0.5", Names: []string{"web", "web.default"}}},
	}
}

func TestNetworkValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(n *Network)
		want   string // error substring; empty means valid
	}{
		{"good", func(*Network) {}, ""},
		{"no gateway, no mtu", func(n *Network) { n.Interfaces[0].Gateway, n.Interfaces[0].MTU = "", 0 }, ""},
		{"ipv6 dns and hosts", func(n *Network) {
			n.IPv6 = true
			n.DNS = []string{"fd00::1"}
			n.Hosts = append(n.Hosts, HostEntry{IP: "fd00::5", Names: []string{"web"}})
		}, ""},
		{"no interfaces", func(n *Network) { n.Interfaces = nil }, "0 interfaces"},
		{"too many interfaces", func(n *Network) {
			for len(n.Interfaces) <= MaxInterfaces {
				n.Interfaces = append(n.Interfaces, n.Interfaces[0])
			}
		}, "interfaces, want 1 to"},
		{"bad mac", func(n *Network) { n.Interfaces[0].MAC = "02:00:0a:58:00" }, "not an Ethernet address"},
		{"eui-64 mac", func(n *Network) { n.Interfaces[0].MAC = "02:00:0a:58:00:05:06:07" }, "not an Ethernet address"},
		{"bad cidr", func(n *Network) { n.Interfaces[0].Address = "10.88.0.5" }, "want an IPv4 CIDR"},
		{"ipv6 cidr", func(n *Network) { n.Interfaces[0].Address = "fd00::5/64" }, "want an IPv4 CIDR"},
		{"prefix too long", func(n *Network) { n.Interfaces[0].Address = "10.88.0.5/31" }, "/8 to /30"},
		{"gateway outside subnet", func(n *Network) { n.Interfaces[0].Gateway = "10.89.0.1" }, "gateway"},
		{"gateway is the address", func(n *Network) { n.Interfaces[0].Gateway = "10.88.0.5" }, "gateway"},
		{"gateway not an ip", func(n *Network) { n.Interfaces[0].Gateway = "router" }, "gateway"},
		{"mtu too small", func(n *Network) { n.Interfaces[0].MTU = 575 }, "mtu 575"},
		{"mtu too big", func(n *Network) { n.Interfaces[0].MTU = 65521 }, "mtu 65521"},
		{"too many dns", func(n *Network) { n.DNS = []string{"1.1.1.1", "8.8.8.8", "9.9.9.9", "10.88.0.1"} }, "at most 3 DNS"},
		{"dns not an ip", func(n *Network) { n.DNS = []string{"dns.example"} }, "not an IP address"},
		{"bad search domain", func(n *Network) { n.Search = []string{"Default"} }, "search domain"},
		{"search with space", func(n *Network) { n.Search = []string{"a b"} }, "search domain"},
		{"empty search label", func(n *Network) { n.Search = []string{"a..b"} }, "search domain"},
		{"too many search", func(n *Network) { n.Search = strings.Fields("a b c d e f g") }, "at most 6 search"},
		{"bad hosts name", func(n *Network) { n.Hosts[0].Names = []string{"web_1"} }, "not a host name"},
		{"hosts name with newline", func(n *Network) { n.Hosts[0].Names = []string{"web\n1.2.3.4 evil"} }, "not a host name"},
		{"hosts without names", func(n *Network) { n.Hosts[0].Names = nil }, "1 to 8 names"},
		{"hosts bad ip", func(n *Network) { n.Hosts[0].IP = "10.88.0" }, "not an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := validNetwork()
			tt.change(n)
			err := n.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestNilNetworkValid: a VM without a NIC has no network config.
func TestNilNetworkValid(t *testing.T) {
	var n *Network
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigNetworkRoundTrip: the network survives Encode/Decode, and a bad
// one makes the whole config invalid.
func TestConfigNetworkRoundTrip(t *testing.T) {
	c := valid()
	c.Network = validNetwork()
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Network == nil || got.Network.Interfaces[0] != c.Network.Interfaces[0] || got.Network.Hosts[0].Names[1] != "web.default" {
		t.Fatalf("round trip: %+v", got.Network)
	}
	c.Network.Interfaces[0].MAC = "bad"
	if _, err := c.Encode(); err == nil || !strings.Contains(err.Error(), "network: interface 0") {
		t.Fatalf("Encode with a bad network = %v", err)
	}
}

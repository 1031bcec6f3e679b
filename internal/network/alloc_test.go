package network

import (
	"net/netip"
	"strings"
	"testing"
)

func occ(ps ...string) []Occupied {
	var out []Occupied
	for _, p := range ps {
		out = append(out, Occupied{Prefix: netip.MustParsePrefix(p), By: "test " + p})
	}
	return out
}

func TestPickSubnet(t *testing.T) {
	tests := []struct {
		name  string
		taken []Occupied
		want  string
	}{
		{"empty host", nil, "10.88.0.0/24"},
		{"first taken", occ("10.88.0.0/24"), "10.88.1.0/24"},
		{"covering route", occ("10.88.0.0/23"), "10.88.2.0/24"},
		{"host address inside", occ("10.88.0.7/32", "10.88.1.0/24"), "10.88.2.0/24"},
		{"whole first pool", occ("10.88.0.0/16"), "10.89.0.0/24"},
		{"wide route", occ("10.0.0.0/8"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickSubnet(tt.taken)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), "--subnet") {
					t.Fatalf("got %v, %v; want an error pointing at --subnet", got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestCheckSubnet(t *testing.T) {
	taken := occ("172.17.0.0/16", "192.0.2.0/24")
	tests := []struct{ in, wantErr string }{
		{"10.90.0.0/24", ""},
		{"172.17.5.0/24", "collides with 172.17.0.0/16"},
		{"192.0.0.0/16", "collides with 192.0.2.0/24"},
		{"10.90.0.1/24", "host bits set"},
		{"10.90.0.0/8", "/16 to /29"},
		{"10.90.0.0/30", "/16 to /29"},
		{"fd00::/64", "IPv4 CIDR"},
		{"bogus", "IPv4 CIDR"},
		{"127.0.0.0/16", "not a unicast range"},
		{"224.1.0.0/16", "not a unicast range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := checkSubnet(tt.in, taken)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAllocIP(t *testing.T) {
	n := &Network{Name: "t", Subnet: "10.90.0.0/29", Attached: map[string]*Attachment{}}
	var got []string
	for i := 0; i < 5; i++ {
		ip, err := allocIP(n)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip.String())
		n.Attached[ip.String()] = &Attachment{IP: ip.String()}
	}
	if want := "10.90.0.2 10.90.0.3 10.90.0.4 10.90.0.5 10.90.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s (.1 is the gateway, .7 broadcast)", got, want)
	}
	if _, err := allocIP(n); err == nil || !strings.Contains(err.Error(), "no free address") {
		t.Fatalf("full network: got %v", err)
	}
	delete(n.Attached, "10.90.0.3")
	if ip, _ := allocIP(n); ip.String() != "10.90.0.3" {
		t.Fatalf("freed address not reused: got %v", ip)
	}
}

func TestVMMAC(t *testing.T) {
	n := &Network{Name: "t", Attached: map[string]*Attachment{}}
	a := vmMAC(n, "web")
	if a != vmMAC(n, "web") {
		t.Fatal("MAC not stable for one VM")
	}
	if !strings.HasPrefix(a, "02:") {
		t.Fatalf("MAC %s is not locally administered unicast", a)
	}
	// A collision with another VM's MAC is resolved.
	n.Attached["other"] = &Attachment{MAC: a}
	if b := vmMAC(n, "web"); b == a {
		t.Fatal("collision not resolved")
	}
}

func TestLinkName(t *testing.T) {
	a := linkName('b', "/share", "default")
	if len(a) > 15 || !strings.HasPrefix(a, LinkPrefix) {
		t.Fatalf("bad link name %q", a)
	}
	if a == linkName('b', "/other-share", "default") {
		t.Fatal("two share dirs got the same bridge")
	}
	if a != linkName('b', "/share", "default") {
		t.Fatal("not stable")
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"8080:80", "127.0.0.1:8080:80/tcp", ""},
		{"0.0.0.0:8080:80", "0.0.0.0:8080:80/tcp", ""},
		{"127.0.0.2:53:53/udp", "127.0.0.2:53:53/udp", ""},
		{"[::1]:8080:80", "[::1]:8080:80/tcp", ""},
		{"8080:80/sctp", "", "protocol"},
		{"80", "", "want [IP:]HOSTPORT:GUESTPORT"},
		{"host:8080:80", "", "not an IP address"},
		{"0:80", "", "host port"},
		{"8080:70000", "", "guest port"},
		{"a:b:c:d", "", "want"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePort(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v; want error containing %q", p, err, tt.err)
				}
				return
			}
			if err != nil || p.Spec() != tt.want {
				t.Fatalf("got %q, %v; want %q", p.Spec(), err, tt.want)
			}
			// The canonical form reads back to itself.
			if q, err := ParsePort(p.Spec()); err != nil || q != p {
				t.Fatalf("round trip: %v, %v", q, err)
			}
		})
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:80", "0.0.0.0:1:2/udp", "[::1]:1:2", "::::", "1:2/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			return
		}
		q, err := ParsePort(p.Spec())
		if err != nil || q != p {
			t.Fatalf("accepted %q as %+v, whose spec %q reads back as %+v, %v", s, p, p.Spec(), q, err)
		}
	})
}

func TestValidateName(t *testing.T) {
	for _, bad := range []string{"", "none", "user", "host", "Bad", "-x", strings.Repeat("a", 64)} {
		if ValidateName(bad) == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if err := ValidateName("isolated"); err != nil {
		t.Fatal(err)
	}
	if err := ValidateName("Bad"); !strings.Contains(err.Error(), "network name") {
		t.Fatalf("message %q does not say network name", err)
	}
}

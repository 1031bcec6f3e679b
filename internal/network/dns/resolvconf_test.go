package dns

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseResolvConf(t *testing.T) {
	self := netip.MustParseAddr("10.88.0.1")
	skip := func(a netip.Addr) bool { return a == self }
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"basic", "nameserver 1.1.1.1\n", []string{"1.1.1.1:53"}},
		{"comments and options", "# x\n; y\nsearch lan\noptions ndots:2\nnameserver 9.9.9.9 # quad9\n", []string{"9.9.9.9:53"}},
		{"ipv6 and zone", "nameserver 2001:db8::1\nnameserver fe80::1%eth0\n", []string{"[2001:db8::1]:53", "[fe80::1%eth0]:53"}},
		{"skips unspecified self and junk", "nameserver 0.0.0.0\nnameserver ::\nnameserver 10.88.0.1\nnameserver ::ffff:10.88.0.1\nnameserver bogus\nnameserver\nnameserver 8.8.8.8\n", []string{"8.8.8.8:53"}},
		{"mapped is unmapped", "nameserver ::ffff:192.0.2.1\n", []string{"192.0.2.1:53"}},
		{"at most three", "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n", []string{"192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"}},
		{"duplicates once", "nameserver 192.0.2.1\nnameserver 192.0.2.1\n", []string{"192.0.2.1:53"}},
		{"leading space", "  nameserver\t192.0.2.9\n", []string{"192.0.2.9:53"}},
		{"not nameserver", "nameservers 192.0.2.1\nNameserver 192.0.2.2\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseResolvConf(strings.NewReader(tt.in), "53", skip)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUpstreamsRecheckInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nameserver 192.0.2.1\n")
	u := newUpstreams(path, "53", nil, slog.New(slog.DiscardHandler))
	u.interval = time.Hour

	tests := []struct {
		name   string
		before func()
		want   []string
	}{
		{"first read", func() {}, []string{"192.0.2.1:53"}},
		{"cached within interval", func() { write("nameserver 192.0.2.2\n") }, []string{"192.0.2.1:53"}},
		{"re-read after interval", func() { u.mu.Lock(); u.checked = time.Time{}; u.mu.Unlock() }, []string{"192.0.2.2:53"}},
		{"unchanged file not re-read", func() {
			// Swap the parsed list behind its back: an unchanged stat
			// must keep it.
			u.mu.Lock()
			u.list, u.checked = []string{"sentinel"}, time.Time{}
			u.mu.Unlock()
		}, []string{"sentinel"}},
		{"removed", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			u.mu.Lock()
			u.checked = time.Time{}
			u.mu.Unlock()
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.before()
			if got := u.servers(); !slices.Equal(got, tt.want) {
				t.Errorf("servers %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseReverse(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for no match
	}{
		{"2.0.88.10.in-addr.arpa.", "10.88.0.2"},
		{"0.88.10.in-addr.arpa.", ""},
		{"1.2.0.88.10.in-addr.arpa.", ""},
		{"256.0.88.10.in-addr.arpa.", ""},
		{"02.0.88.10.in-addr.arpa.", ""},
		{"x.0.88.10.in-addr.arpa.", ""},
		{"2.0.88.10.ip6.arpa.", ""},
		{"web.default.", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ip, ok := parseReverse(tt.in)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tt.want {
				t.Errorf("parseReverse(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	s, err := New(Config{Zone: "corp.lan", Listen: "127.0.0.1:0", Lookup: testLookup})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		vm          string
		apex, local bool
	}{
		{"web.", "web", false, true},
		{"web.corp.lan.", "web", false, true},
		{"a.web.corp.lan.", "", false, true},
		{"corp.lan.", "", true, true},
		{"lan.", "lan", false, true},
		{"web.lan.", "", false, false},
		{"example.com.", "", false, false},
		{".", "", false, false},
		{`we\.b.corp.lan.`, `we\.b`, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, apex, local := s.classify(tt.name)
			if vm != tt.vm || apex != tt.apex || local != tt.local {
				t.Errorf("classify(%q) = %q, %v, %v; want %q, %v, %v", tt.name, vm, apex, local, tt.vm, tt.apex, tt.local)
			}
		})
	}
}

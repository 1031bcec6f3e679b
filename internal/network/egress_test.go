package network

import (
	"strings"
	"testing"
)

func TestEgressCompile(t *testing.T) {
	tests := []struct {
		name    string
		e       *Egress
		allow   []string
		refuse  []string
		wantErr string
	}{
		{name: "nil is open", e: nil, allow: []string{"anything.example"}},
		{name: "open", e: &Egress{Preset: EgressOpen}, allow: []string{"x.y"}},
		{name: "none", e: &Egress{Preset: EgressNone}, refuse: []string{"deb.debian.org", "pypi.org"}},
		{name: "registries", e: &Egress{Preset: EgressRegistries},
			allow:  []string{"deb.debian.org", "PYPI.org.", "mirror.debian.org", "proxy.golang.org", "ghcr.io"},
			refuse: []string{"github.com", "debian.org.evil.example", "evil-debian.org"}},
		{name: "dev includes registries", e: &Egress{Preset: EgressDev}, allow: []string{"github.com", "pypi.org"}, refuse: []string{"example.com"}},
		{name: "allow-list", e: &Egress{Preset: EgressNone, Allow: []string{"api.example.com", "*.corp.example", "10.1.0.0/16:443", "192.0.2.7"}},
			allow: []string{"api.example.com", "a.b.corp.example"}, refuse: []string{"corp.example", "example.com"}},
		{name: "bad preset", e: &Egress{Preset: "closed"}, wantErr: "unknown egress preset"},
		{name: "bad name", e: &Egress{Preset: EgressNone, Allow: []string{"not a name"}}, wantErr: "--allow"},
		{name: "single label", e: &Egress{Preset: EgressNone, Allow: []string{"localhost"}}, wantErr: "not a host name"},
		{name: "bad port", e: &Egress{Preset: EgressNone, Allow: []string{"10.0.0.0/8:99999"}}, wantErr: "port"},
		{name: "bad deny", e: &Egress{Preset: EgressOpen, Deny: []string{"example.com"}}, wantErr: "--deny"},
		{name: "v6 deny refused", e: &Egress{Preset: EgressOpen, Deny: []string{"fd00::/8"}}, wantErr: "--deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.e.Compile()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tt.allow {
				if !p.AllowName(n) {
					t.Errorf("%s refused", n)
				}
			}
			for _, n := range tt.refuse {
				if p.AllowName(n) {
					t.Errorf("%s allowed", n)
				}
			}
		})
	}
}

func TestEgressCIDRs(t *testing.T) {
	p, err := (&Egress{Preset: EgressNone, Allow: []string{"10.1.0.0/16:443", "192.0.2.7"}, Deny: []string{"10.1.2.0/24"}}).Compile()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range p.CIDRs {
		got = append(got, c.String())
	}
	if strings.Join(got, " ") != "10.1.0.0/16:443 192.0.2.7/32" || len(p.Deny) != 1 || p.Deny[0].String() != "10.1.2.0/24" {
		t.Fatalf("cidrs %v deny %v", got, p.Deny)
	}
}

// Every preset name in presets.toml is a valid rule.
func TestPresetsFile(t *testing.T) {
	for _, name := range []string{EgressRegistries, EgressDev} {
		if len(presetNames(name)) == 0 {
			t.Fatalf("preset %s is empty", name)
		}
		if _, err := (&Egress{Preset: name}).Compile(); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzEgressCompile(f *testing.F) {
	for _, s := range []string{"api.example.com", "*.x.org", "10.0.0.0/8:443", "1.2.3.4", "*.", ":", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rule string) {
		p, err := (&Egress{Preset: EgressNone, Allow: []string{rule}}).Compile()
		if err != nil {
			return
		}
		for _, n := range p.Names() {
			if strings.ContainsAny(n, " \n\x00") {
				t.Fatalf("accepted rule %q gives name %q", rule, n)
			}
		}
	})
}

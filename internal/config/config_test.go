package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr []string // substrings
	}{
		{name: "empty", in: ""},
		{name: "all keys", in: "default_cpus = 2\ndefault_memory_mib = 512\ndefault_backend = \"qemu\"\ndefault_image = \"minimal\"\nboot_timeout = \"90s\"\nstop_timeout = \"5s\"\n",
			want: Config{DefaultCPUs: 2, DefaultMemoryMiB: 512, DefaultBackend: "qemu", DefaultImage: "minimal", BootTimeout: Duration(90 * time.Second), StopTimeout: Duration(5 * time.Second)}},
		{name: "unknown key", in: "default_cpus = 2\n\nlima_cpus = 8\n", wantErr: []string{"cfg.toml:3", `unknown key "lima_cpus"`}},
		{name: "wrong type", in: "default_cpus = \"two\"\n", wantErr: []string{"cfg.toml:1", "default_cpus"}},
		{name: "bad duration", in: "\nboot_timeout = \"soon\"\n", wantErr: []string{"cfg.toml:2", "boot_timeout", "invalid duration"}},
		{name: "syntax", in: "default_cpus = = 2\n", wantErr: []string{"cfg.toml:1"}},
		{name: "range", in: "default_memory_mib = 10\n", wantErr: []string{"default_memory_mib", "at least 64"}},
		{name: "trust", in: "default_cpus = 1\n[trust]\nrequire_signatures = true\nrequire_signatures_for = [\"registry.example.com\", \"s3://bucket\"]\n",
			want: Config{DefaultCPUs: 1, Trust: TrustPolicy{RequireSignatures: true, RequireSignaturesFor: []string{"registry.example.com", "s3://bucket"}}}},
		{name: "trust unknown key", in: "[trust]\nrequire_signature = true\n", wantErr: []string{"cfg.toml:2", `unknown key "trust.require_signature"`}},
		{name: "trust wrong type", in: "[trust]\nrequire_signatures_for = \"registry.example.com\"\n", wantErr: []string{"cfg.toml:2", "require_signatures_for"}},
		{name: "trust empty prefix", in: "[trust]\nrequire_signatures_for = [\"\"]\n", wantErr: []string{"require_signatures_for[0]", "registry host or bucket"}},
		{name: "trust bare scheme", in: "[trust]\nrequire_signatures_for = [\"ok.example\", \"s3://\"]\n", wantErr: []string{"require_signatures_for[1]"}},
		{name: "trust space", in: "[trust]\nrequire_signatures_for = [\"a b\"]\n", wantErr: []string{"require_signatures_for[0]", "spaces"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("cfg.toml", []byte(tt.in))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("want error, got %+v", got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got %+v want %+v", *got, tt.want)
			}
		})
	}
}

func TestLoadMissingIsEmptyAndCreatesNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	c, err := Load(p)
	if err != nil || !reflect.DeepEqual(*c, Config{}) {
		t.Fatalf("got %+v, %v", c, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("Load created the file")
	}
}

func TestTrustRequires(t *testing.T) {
	p := TrustPolicy{RequireSignaturesFor: []string{"registry.example.com", "s3://bucket/team/", "https://Other.example:5000/tpl"}}
	tests := []struct {
		addr string
		want bool
	}{
		{"registry.example.com", true},
		{"registry.example.com/web", true},
		{"registry.example.com:5000/web", true},
		{"REGISTRY.example.com/web", true},
		{"https://registry.example.com/web", true},
		{"registry.example.community/web", false},
		{"example.com/web", false},
		{"s3://bucket/team", true},
		{"s3://bucket/team/web", true},
		{"s3://bucket/teams/web", false},
		{"s3://bucket", false},
		{"s3://bucket-2/team", false},
		{"other.example:5000/tpl/web", true},
		{"other.example:5000/tplx", false},
		{"other.example/tpl", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := p.Requires(tt.addr); got != tt.want {
			t.Errorf("Requires(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if (TrustPolicy{}).Requires("registry.example.com") {
		t.Error("empty policy requires signatures")
	}
	if !(TrustPolicy{RequireSignatures: true}).Requires("anything.example/x") {
		t.Error("require_signatures = true does not apply everywhere")
	}
}

func TestEncodeTrust(t *testing.T) {
	c := &Config{DefaultCPUs: 2}
	b, err := c.Encode()
	if err != nil || strings.Contains(string(b), "trust") {
		t.Fatalf("unset [trust] encoded: %q %v", b, err)
	}
	c.Trust = TrustPolicy{RequireSignaturesFor: []string{"s3://bucket"}}
	b, err = c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("enc.toml", b)
	if err != nil || !reflect.DeepEqual(*back, *c) {
		t.Fatalf("round trip: %q gives %+v, %v", b, back, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("default_cpus = 2\n"))
	f.Add([]byte("boot_timeout = \"1m\"\n[x]\ny=1"))
	f.Add([]byte("[trust]\nrequire_signatures_for = [\"s3://b\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.toml", b)
		if err == nil && c.Validate() != nil {
			t.Fatal("accepted invalid config")
		}
	})
}

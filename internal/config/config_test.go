package config

import (
	"os"
	"path/filepath"
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
			if *got != tt.want {
				t.Fatalf("got %+v want %+v", *got, tt.want)
			}
		})
	}
}

func TestLoadMissingIsEmptyAndCreatesNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	c, err := Load(p)
	if err != nil || *c != (Config{}) {
		t.Fatalf("got %+v, %v", c, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("Load created the file")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("default_cpus = 2\n"))
	f.Add([]byte("boot_timeout = \"1m\"\n[x]\ny=1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.toml", b)
		if err == nil && c.Validate() != nil {
			t.Fatal("accepted invalid config")
		}
	})
}

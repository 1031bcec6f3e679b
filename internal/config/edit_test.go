package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSetInFile(t *testing.T) {
	const withTable = "# my settings\ndefault_cpus = 1 # one is enough\n\n[trust]\n# keep this\nrequire_signatures = false\n"
	for _, tc := range []struct {
		name, file, key, value string
		unset                  bool
		want                   string // the file after; "" with err
		err                    string
	}{
		{name: "new file", key: "default_cpus", value: "2", want: "default_cpus = 2\n"},
		{name: "replace keeps comments", file: withTable, key: "default_cpus", value: "4",
			want: "# my settings\ndefault_cpus = 4 # one is enough\n\n[trust]\n# keep this\nrequire_signatures = false\n"},
		{name: "new top-level key after the others", file: withTable, key: "default_image", value: "debian",
			want: "# my settings\ndefault_cpus = 1 # one is enough\ndefault_image = 'debian'\n\n[trust]\n# keep this\nrequire_signatures = false\n"},
		{name: "key in its table", file: withTable, key: "trust.require_signatures", value: "true",
			want: "# my settings\ndefault_cpus = 1 # one is enough\n\n[trust]\n# keep this\nrequire_signatures = true\n"},
		{name: "new key in its table", file: withTable, key: "trust.require_signatures_for", value: "reg.example.com/team, s3://b",
			want: withTable + "require_signatures_for = ['reg.example.com/team', 's3://b']\n"},
		{name: "table made", file: "default_cpus = 1\n", key: "trust.require_signatures", value: "yes",
			err: "true or false"},
		{name: "table added", file: "default_cpus = 1", key: "trust.require_signatures", value: "true",
			want: "default_cpus = 1\n\n[trust]\nrequire_signatures = true\n"},
		{name: "dotted stays dotted", file: "trust.require_signatures = true\n", key: "trust.require_signatures", value: "false",
			want: "trust.require_signatures = false\n"},
		{name: "duration", key: "boot_timeout", value: "90s", want: "boot_timeout = '90s'\n"},
		{name: "empty list", file: withTable, key: "trust.require_signatures_for", value: "",
			want: withTable + "require_signatures_for = []\n"},
		{name: "unset", file: withTable, key: "default_cpus", unset: true,
			want: "# my settings\n\n[trust]\n# keep this\nrequire_signatures = false\n"},
		{name: "unset in table", file: withTable, key: "trust.require_signatures", unset: true,
			want: "# my settings\ndefault_cpus = 1 # one is enough\n\n[trust]\n# keep this\n"},
		{name: "unset what is not set", file: withTable, key: "default_image", unset: true, want: withTable},
		{name: "out of range", file: withTable, key: "default_cpus", value: "999", err: "between 1 and 255"},
		{name: "not a number", file: withTable, key: "default_memory_mib", value: "lots", err: "wants an integer"},
		{name: "too little memory", file: withTable, key: "default_memory_mib", value: "12", err: "at least 64"},
		{name: "bad duration", file: withTable, key: "stop_timeout", value: "5 minutes", err: "wants a duration"},
		{name: "negative duration", key: "stop_timeout", value: "-5s", err: "wants a duration"},
		{name: "unknown key", file: withTable, key: "default_colour", value: "red", err: "unknown config key"},
		{name: "broken file", file: "default_cpus = \n", key: "default_image", value: "x", err: "nothing was changed"},
		{name: "string escaped", key: "default_image", value: `it's "odd"`, want: "default_image = \"it's \\\"odd\\\"\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.toml")
			if tc.file != "" {
				if err := os.WriteFile(p, []byte(tc.file), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tc.unset {
				err = UnsetInFile(p, tc.key)
			} else {
				err = SetInFile(p, tc.key, tc.value)
			}
			got, _ := os.ReadFile(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if string(got) != tc.file {
					t.Fatalf("a refused edit changed the file to %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("file:\n%s\nwant:\n%s", got, tc.want)
			}
			c, err := Load(p)
			if err != nil {
				t.Fatalf("edited file does not load: %v", err)
			}
			if !tc.unset {
				if _, set, _ := c.Get(tc.key); !set && tc.value != "" && tc.value != "false" {
					t.Errorf("%s not set after set", tc.key)
				}
			}
			if tc.file != "" {
				if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
					t.Errorf("mode %v, want the file's 0640", fi.Mode().Perm())
				}
			}
		})
	}
}

// Every key Get knows is one of the struct's TOML keys, and the other way.
func TestKeysCoverConfig(t *testing.T) {
	c := &Config{}
	for _, k := range Keys() {
		if _, _, err := c.Get(k.Name); err != nil {
			t.Errorf("%s: %v", k.Name, err)
		}
	}
	b, err := (&Config{DefaultCPUs: 1, DefaultMemoryMiB: 64, DefaultBackend: "x", DefaultImage: "x", DefaultNetwork: "x",
		BootTimeout: 1, StopTimeout: 1, ConsoleIdleTimeout: 1,
		Trust:  TrustPolicy{RequireSignatures: true, RequireSignaturesFor: []string{"x"}},
		Update: UpdateConfig{URL: "https://x", Key: "/k.pub"}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, _, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "require_") {
			name = "trust." + name
		}
		if name == "url" || name == "key" {
			name = "update." + name
		}
		if _, err := LookupKey(strings.TrimSpace(name)); err != nil {
			t.Errorf("config.toml key %s is not in Keys()", name)
		}
	}
}

// TestKeyDefaults: every key says what it defaults to, in its own kind, so
// config get, keys and show never print a blank for an unset key.
func TestKeyDefaults(t *testing.T) {
	for _, k := range Keys() {
		ok := false
		switch k.Kind {
		case KindInt:
			_, ok = k.Default.(int)
		case KindString:
			_, ok = k.Default.(string)
		case KindDuration:
			d, isString := k.Default.(string)
			if isString {
				_, err := time.ParseDuration(d)
				ok = err == nil
			}
		case KindBool:
			_, ok = k.Default.(bool)
		case KindStrings:
			_, ok = k.Default.([]string)
		}
		if !ok {
			t.Errorf("key %s (%s): default %#v is not a %s", k.Name, k.Kind, k.Default, k.Kind)
		}
	}
}

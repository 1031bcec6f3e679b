package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/config"
)

// config show prints every key config.toml takes, with the value in use:
// the file's when set, the built-in default otherwise.
func TestConfigShowPrintsEveryKey(t *testing.T) {
	const everyKey = `default_cpus = 3
default_memory_mib = 768
default_backend = "docker"
default_image = "http"
default_network = "none"
boot_timeout = "90s"
stop_timeout = "5s"
console_idle_timeout = "2m"

[trust]
require_signatures = true
require_signatures_for = ["registry.example.com/team"]

[update]
url = "https://releases.example.com/mvm"
key = "/etc/mvm/release.pub"
`
	tests := []struct {
		name string
		file string            // config.toml; "" for none
		want map[string]string // key (dotted) -> the line's value
	}{
		{"built-in defaults", "", map[string]string{
			"default_cpus": "1", "default_memory_mib": "256", "default_backend": `"auto"`,
			"default_image": `"minimal"`, "default_network": `"default"`, "boot_timeout": `"3m0s"`,
			"stop_timeout": `"20s"`, "console_idle_timeout": `"15m0s"`,
			"trust.require_signatures": "false", "trust.require_signatures_for": "[]",
			"update.url": `""`, "update.key": `""`,
		}},
		{"every key set", everyKey, map[string]string{
			"default_cpus": "3", "default_memory_mib": "768", "default_backend": `"docker"`,
			"default_image": `"http"`, "default_network": `"none"`, "boot_timeout": `"1m30s"`,
			"stop_timeout": `"5s"`, "console_idle_timeout": `"2m0s"`,
			"trust.require_signatures": "true", "trust.require_signatures_for": `["registry.example.com/team"]`,
			"update.url": `"https://releases.example.com/mvm"`, "update.key": `"/etc/mvm/release.pub"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := keyEnv(t)
			if tt.file != "" {
				if err := writeFile(filepath.Join(dir, "config.toml"), tt.file); err != nil {
					t.Fatal(err)
				}
			}
			code, out, errs := mvmctl(t, "config", "show")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			// The test's table must cover config's own key list.
			for _, k := range config.Keys() {
				if _, ok := tt.want[k.Name]; !ok {
					t.Errorf("key %s is not in this test's table", k.Name)
				}
			}
			for key, val := range tt.want {
				table, name, dotted := strings.Cut(key, ".")
				section := out
				if dotted {
					_, section, _ = strings.Cut(out, "\n["+table+"]\n")
				} else {
					section, _, _ = strings.Cut(out, "\n[")
					name = key
				}
				if !strings.Contains(section, "\n"+name+" = "+val+"\n") && !strings.HasPrefix(section, name+" = "+val+"\n") {
					t.Errorf("%s: want %q in\n%s", key, name+" = "+val, out)
				}
			}

			code, out, errs = mvmctl(t, "config", "show", "--json")
			if code != 0 {
				t.Fatalf("--json: exit %d: %s", code, errs)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err)
			}
			for key := range tt.want {
				table, name, dotted := strings.Cut(key, ".")
				m := got
				if dotted {
					m, _ = got[table].(map[string]any)
				} else {
					name = key
				}
				if _, ok := m[name]; !ok {
					t.Errorf("--json lacks %s:\n%s", key, out)
				}
			}
		})
	}
}

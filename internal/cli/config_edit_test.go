package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigGetSetUnset(t *testing.T) {
	cfgDir := t.TempDir()
	t.Setenv("MVM_STATE_DIR", t.TempDir())
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	t.Setenv("MVM_SHARE_DIR", t.TempDir())
	t.Setenv("MVM_CONFIG_DIR", cfgDir)
	file := filepath.Join(cfgDir, "config.toml")
	if err := os.WriteFile(file, []byte("# mine\ndefault_cpus = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mvm := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	for _, st := range []struct {
		args []string
		code int
		out  string // exact stdout
		err  string // in stderr
	}{
		{[]string{"config", "get", "default_cpus"}, 0, "2\n", ""},
		{[]string{"config", "get", "default_memory_mib"}, 0, "256\n", ""},
		{[]string{"config", "get", "default_memory_mib", "--json"}, 0, "", ""},
		{[]string{"config", "set", "default_memory_mib", "512"}, 0, "", "Set default_memory_mib"},
		{[]string{"config", "get", "default_memory_mib"}, 0, "512\n", ""},
		{[]string{"config", "set", "trust.require_signatures_for", "reg.example.com/a,s3://b"}, 0, "", ""},
		{[]string{"config", "get", "trust.require_signatures_for"}, 0, "reg.example.com/a,s3://b\n", ""},
		{[]string{"config", "set", "default_cpus", "0x"}, 1, "", "wants an integer"},
		{[]string{"config", "set", "default_cpus", "300"}, 1, "", "between 1 and 255"},
		{[]string{"config", "set", "colour", "red"}, 2, "", "unknown config key"},
		{[]string{"config", "get", "colour"}, 2, "", "unknown config key"},
		{[]string{"config", "unset", "default_cpus"}, 0, "", ""},
		{[]string{"config", "get", "default_cpus"}, 0, "1\n", ""},
	} {
		code, out, errs := mvm(st.args...)
		if code != st.code || !strings.Contains(errs, st.err) || st.out != "" && out != st.out {
			t.Fatalf("%v: exit %d (want %d)\nstdout %q (want %q)\nstderr %s", st.args, code, st.code, out, st.out, errs)
		}
	}
	b, _ := os.ReadFile(file)
	want := "# mine\ndefault_memory_mib = 512\n\n[trust]\nrequire_signatures_for = ['reg.example.com/a', 's3://b']\n"
	if string(b) != want {
		t.Fatalf("config.toml:\n%s\nwant:\n%s", b, want)
	}
	if code, out, errs := mvm("config", "keys"); code != 0 || !strings.Contains(out, "trust.require_signatures_for") {
		t.Fatalf("config keys: %d %s %s", code, out, errs)
	}
}

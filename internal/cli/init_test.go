package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInit: --dry-run plans and changes nothing; init does each step once
// and a second run finds everything done.
func TestInit(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"STATE", "CACHE", "CONFIG", "SHARE"} {
		dirs[d] = filepath.Join(root, strings.ToLower(d))
		t.Setenv("MVM_"+d+"_DIR", dirs[d])
	}
	mvm := func(args ...string) (int, []initStep, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(args, "--json"), strings.NewReader(""), &out, &errb)
		var steps []initStep
		if err := json.Unmarshal(out.Bytes(), &steps); err != nil {
			t.Fatalf("%v: %v\n%s\n%s", args, err, out.String(), errb.String())
		}
		return code, steps, errb.String()
	}
	state := func(steps []initStep, step string) string {
		for _, s := range steps {
			if s.Step == step {
				return s.State
			}
		}
		return "missing"
	}

	code, plan, errs := mvm("init", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, errs)
	}
	for _, step := range []string{"directories", "signing key", "network", "doctor"} {
		if got := state(plan, step); got != "would-do" {
			t.Errorf("dry run: %s is %s, want would-do", step, got)
		}
	}
	if _, err := os.Stat(dirs["CONFIG"]); err == nil {
		t.Fatal("dry run created the config directory")
	}

	// VMs of this config get no NIC, so init makes no network (and this
	// test no bridge).
	if err := os.MkdirAll(dirs["CONFIG"], 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs["CONFIG"], "config.toml"), []byte("default_network = \"none\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, first, _ := mvm("init")
	if got := state(first, "directories"); got != "done" {
		t.Errorf("first run: directories %s, want done", got)
	}
	if got := state(first, "signing key"); got != "done" {
		t.Errorf("first run: signing key %s, want done", got)
	}
	if got := state(first, "network"); got != "ok" {
		t.Errorf("first run: network %s, want ok (default_network none)", got)
	}
	if _, err := os.Stat(filepath.Join(dirs["CONFIG"], "keys", "default.key")); err != nil {
		t.Errorf("no default key after init: %v", err)
	}
	_, second, _ := mvm("init")
	for _, s := range second {
		if s.State == "done" {
			t.Errorf("second run did %s again: %s", s.Step, s.Detail)
		}
	}
	// Off a terminal without --yes, missing packages are reported, never
	// installed.
	if s := state(second, "packages"); s != "ok" && s != "skipped" {
		t.Errorf("packages %s, want ok or skipped", s)
	}
}

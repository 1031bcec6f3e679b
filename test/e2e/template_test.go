package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTemplateLocal: init, create, build with a snapshot, up --template
// (restored, own identity, defaults applied, flags winning), the template
// kept while a VM uses it, and delete.
func TestTemplateLocal(t *testing.T) {
	const tpl = "e2e-tpl"
	dir := filepath.Join(t.TempDir(), "proj")
	t.Cleanup(func() {
		mvm(t, time.Minute, "", "rm", "-f", "e2e-tpl-a", "e2e-tpl-b")
		mvm(t, time.Minute, "", "template", "delete", "-f", tpl)
	})
	must(t, time.Minute, "template", "init", dir, "--name", tpl)
	for _, f := range []string{"recipe.toml", "mvm-template.toml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("template init wrote no %s: %v", f, err)
		}
	}
	// init never overwrites.
	if r := mvm(t, time.Minute, "", "template", "init", dir, "--name", tpl); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second init: %s", r)
	}
	must(t, time.Minute, "template", "create", tpl, "--from", dir, "--memory", "128M", "--expect-secret", "tok")
	if r := mvm(t, time.Minute, "", "template", "create", tpl, "--from", "minimal"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("duplicate create: %s", r)
	}
	must(t, 10*time.Minute, "template", "build", tpl, "--snapshot")

	var info struct {
		Name     string `json:"name"`
		Built    bool   `json:"built"`
		Snapshot *struct {
			Backend   string `json:"backend"`
			MemoryMiB int    `json:"memory_mib"`
		} `json:"snapshot"`
		Defaults struct {
			MemoryMiB int `json:"memory_mib"`
		} `json:"defaults"`
		UsedBy []string `json:"used_by"`
	}
	r := must(t, time.Minute, "template", "info", tpl, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || !info.Built || info.Snapshot == nil || info.Snapshot.Backend != "qemu" || info.Snapshot.MemoryMiB != 128 {
		t.Fatalf("template info after build: %v %s", err, r)
	}
	// No build VM is left behind.
	if ls := must(t, time.Minute, "ls", "-a", "--json"); strings.Contains(ls.stdout, "tpl-"+tpl) {
		t.Fatalf("build VM left: %s", ls.stdout)
	}

	// The template expects a secret: up says which and how.
	if r := mvm(t, time.Minute, "", "up", "--template", tpl, "--name", "e2e-tpl-a"); r.code == 0 || !strings.Contains(r.stderr, "tok") || !strings.Contains(r.stderr, "--secret") {
		t.Fatalf("up without the expected secret: %s", r)
	}
	secret := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"e2e-tpl-a", "e2e-tpl-b"} {
		must(t, 3*time.Minute, "up", "--template", tpl, "--name", name, "--secret", "tok=@"+secret)
		out := must(t, time.Minute, "exec", name, "--", "sh", "-c", "hostname; cat /run/secrets/tok")
		if got := strings.Fields(out.stdout); len(got) != 2 || got[0] != name || got[1] != "s3cret" {
			t.Fatalf("VM %s from the template: %q", name, out.stdout)
		}
	}
	var rec struct {
		Record struct {
			Template string `json:"template"`
		} `json:"record"`
	}
	r = must(t, time.Minute, "inspect", "e2e-tpl-a", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil || rec.Record.Template != tpl {
		t.Fatalf("inspect of a template VM: %v %s", err, r)
	}
	// Kept while VMs use it.
	if r := mvm(t, time.Minute, "", "template", "delete", tpl); r.code == 0 || !strings.Contains(r.stderr, "e2e-tpl-a") {
		t.Fatalf("delete in use: %s", r)
	}
	// A stopped template VM boots again cold from the template's own image.
	must(t, 2*time.Minute, "down", "e2e-tpl-b")
	must(t, 5*time.Minute, "start", "e2e-tpl-b", "--secret", "tok=@"+secret)
	if out := must(t, time.Minute, "exec", "e2e-tpl-b", "--", "hostname"); strings.TrimSpace(out.stdout) != "e2e-tpl-b" {
		t.Fatalf("restarted template VM: %q", out.stdout)
	}
	must(t, time.Minute, "rm", "-f", "e2e-tpl-a", "e2e-tpl-b")
	must(t, time.Minute, "template", "delete", tpl)
	if r := mvm(t, time.Minute, "", "template", "info", tpl); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("info after delete: %s", r)
	}
}

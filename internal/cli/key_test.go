package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/sign"
)

// The key verbs that only read (audit_test.go's list is shared with
// other commands' authors; this file owns the key verbs' side).
func init() { readOnlyVerbs = append(readOnlyVerbs, "key list", "key export") }

// keyEnv gives mvmctl fresh roots for a whole test and returns the config
// and audit directories.
func keyEnv(t *testing.T) (config, auditDir string) {
	t.Helper()
	auditDir = auditEnv(t)
	config = t.TempDir()
	t.Setenv("MVM_CONFIG_DIR", config)
	return config, auditDir
}

func mvmctlStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestKeyGenerateListExport(t *testing.T) {
	config, auditDir := keyEnv(t)
	code, out, errs := mvmctl(t, "key", "generate")
	if code != 0 || !strings.HasPrefix(out, "ed25519:") {
		t.Fatalf("generate: exit %d\n%s%s", code, out, errs)
	}
	id := strings.TrimSpace(out)
	if !strings.Contains(errs, "mvmctl key export default") {
		t.Errorf("generate does not say how to share the key: %s", errs)
	}
	st, err := os.Stat(filepath.Join(config, "keys", "default.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}

	code, _, errs = mvmctl(t, "key", "generate", "default")
	if code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second generate: exit %d %s", code, errs)
	}
	if code, out, errs = mvmctl(t, "key", "generate", "ci", "--no-trust"); code != 0 {
		t.Fatalf("generate ci: %d %s", code, errs)
	}
	ciID := strings.TrimSpace(out)

	code, out, _ = mvmctl(t, "key", "list")
	if code != 0 || !strings.Contains(out, "KIND") || strings.Count(out, id) != 2 || strings.Count(out, ciID) != 1 {
		t.Fatalf("list (default is own and trusted, ci only own):\n%s", out)
	}
	code, out, _ = mvmctl(t, "key", "list", "--json")
	var items []keyItem
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 3 {
		t.Fatalf("list --json: %s", out)
	}
	for _, it := range items {
		if it.ID == ciID && it.Trusted {
			t.Errorf("--no-trust key listed as trusted: %+v", it)
		}
	}

	code, out, _ = mvmctl(t, "key", "export")
	if code != 0 {
		t.Fatal(out)
	}
	pub, err := sign.ParsePublicKey([]byte(out))
	if err != nil || pub.ID != id || pub.Name != "default" {
		t.Fatalf("export: %q %+v %v", out, pub, err)
	}
	if code, _, errs = mvmctl(t, "key", "export", "nosuch"); code != 1 || !strings.Contains(errs, "mvmctl key generate nosuch") {
		t.Fatalf("export of a missing key: %d %s", code, errs)
	}

	var verbs []string
	for _, r := range auditRecords(t, auditDir) {
		verbs = append(verbs, r.Verb+" "+r.Result)
	}
	if got := strings.Join(verbs, "|"); !strings.HasPrefix(got, "key generate ok|key generate error: ") || strings.Count(got, "key generate") != 3 || strings.Contains(got, "key list") || strings.Contains(got, "key export") {
		t.Errorf("audit trail: %s", got)
	}
}

func TestKeyTrustUntrust(t *testing.T) {
	_, auditDir := keyEnv(t)
	other, err := sign.GenerateKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := other.Public().MarshalText()
	file := filepath.Join(t.TempDir(), "alice.pub")
	if err := os.WriteFile(file, text, 0o644); err != nil {
		t.Fatal(err)
	}
	id := other.Public().ID

	code, out, errs := mvmctl(t, "key", "trust", file)
	if code != 0 || strings.TrimSpace(out) != id || !strings.Contains(errs, "Check the ID") {
		t.Fatalf("trust: %d %q %s", code, out, errs)
	}
	code, out, errs = mvmctlStdin(t, string(text), "--json", "key", "trust", "-")
	if code != 0 || !strings.Contains(out, `"added": false`) || !strings.Contains(out, id) {
		t.Fatalf("trust again from stdin: %d %s %s", code, out, errs)
	}
	code, out, _ = mvmctl(t, "key", "list")
	if code != 0 || !strings.Contains(out, "trusted") || !strings.Contains(out, "alice") {
		t.Fatalf("list: %s", out)
	}

	if code, _, errs = mvmctlStdin(t, "ssh-ed25519 AAAA x\n", "key", "trust", "-"); code != 1 || !strings.Contains(errs, "mvmctl key export") {
		t.Fatalf("trust garbage: %d %s", code, errs)
	}
	if code, _, errs = mvmctl(t, "key", "trust", "-"); code != 1 || !strings.Contains(errs, "empty") {
		t.Fatalf("trust empty stdin: %d %s", code, errs)
	}
	if code, _, errs = mvmctl(t, "key", "trust"); code != 2 {
		t.Fatalf("trust without a file: %d %s", code, errs)
	}

	if code, out, errs = mvmctl(t, "key", "untrust", id); code != 0 || strings.TrimSpace(out) != id {
		t.Fatalf("untrust: %d %s %s", code, out, errs)
	}
	if code, _, errs = mvmctl(t, "key", "untrust", id); code != 1 || !strings.Contains(errs, "not trusted") {
		t.Fatalf("untrust again: %d %s", code, errs)
	}
	if code, out, _ = mvmctl(t, "key", "list"); code != 0 || strings.Contains(out, id) {
		t.Fatalf("still listed: %s", out)
	}

	recs := auditRecords(t, auditDir)
	if len(recs) != 7 || recs[0].Verb != "key trust" || recs[0].Target != file || recs[5].Verb != "key untrust" || recs[5].Target != id {
		for _, r := range recs {
			t.Logf("%s %s %s", r.Verb, r.Target, r.Result)
		}
		t.Fatalf("%d audit records", len(recs))
	}
}

// Keys do not depend on config.toml: a broken one must not lock anyone out
// of their keys, since key verbs are how you fix trust problems.
func TestKeyWorksWithBrokenConfig(t *testing.T) {
	config, _ := keyEnv(t)
	if err := writeFile(filepath.Join(config, "config.toml"), "bogus = 1\n"); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := mvmctl(t, "key", "generate"); code != 0 {
		t.Fatalf("generate: %d %s", code, errs)
	}
	if code, _, errs := mvmctl(t, "ls"); code == 0 || !strings.Contains(errs, "bogus") {
		t.Fatalf("config is not broken after all: %d %s", code, errs)
	}
}

func TestKeyUsageErrors(t *testing.T) {
	keyEnv(t)
	for _, args := range [][]string{
		{"key", "generate", "a", "b"},
		{"key", "export", "a", "b"},
		{"key", "untrust"},
		{"key", "list", "x"},
	} {
		if code, _, errs := mvmctl(t, args...); code != 2 {
			t.Errorf("%v: exit %d %s", args, code, errs)
		}
	}
	if code, _, errs := mvmctl(t, "key", "generate", "../x"); code != 1 || !strings.Contains(errs, "invalid key name") {
		t.Errorf("bad name: %d %s", code, errs)
	}
	if code, _, errs := mvmctl(t, "key", "untrust", "default"); code != 1 || !strings.Contains(errs, "mvmctl key list") {
		t.Errorf("untrust by name: %d %s", code, errs)
	}
}

// config show names the [trust] keys, set or not.
func TestKeyTrustPolicyInConfigShow(t *testing.T) {
	config, _ := keyEnv(t)
	code, out, errs := mvmctl(t, "config", "show")
	if code != 0 || !strings.Contains(out, "[trust]\nrequire_signatures = false\nrequire_signatures_for = []\n") {
		t.Fatalf("unset: %d\n%s%s", code, out, errs)
	}
	if err := writeFile(filepath.Join(config, "config.toml"), "[trust]\nrequire_signatures_for = [\"registry.example.com\", \"s3://bucket\"]\n"); err != nil {
		t.Fatal(err)
	}
	code, out, errs = mvmctl(t, "config", "show")
	if code != 0 || !strings.Contains(out, `require_signatures_for = ["registry.example.com", "s3://bucket"]`) {
		t.Fatalf("set: %d\n%s%s", code, out, errs)
	}
	code, out, _ = mvmctl(t, "config", "show", "--json")
	if code != 0 || !strings.Contains(out, `"require_signatures": false`) || !strings.Contains(out, `"s3://bucket"`) {
		t.Fatalf("json: %s", out)
	}
	if err := writeFile(filepath.Join(config, "config.toml"), "[trust]\nrequire_signatures_for = [\"\"]\n"); err != nil {
		t.Fatal(err)
	}
	if code, _, errs = mvmctl(t, "config", "show"); code != 1 || !strings.Contains(errs, "require_signatures_for[0]") {
		t.Fatalf("invalid prefix: %d %s", code, errs)
	}
}

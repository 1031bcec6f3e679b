package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/sign"
)

func TestUpdateCommand(t *testing.T) {
	key, err := sign.GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	var sums strings.Builder
	for _, n := range []string{"mvmctl-linux-amd64", "mvmctl-linux-arm64", "mvm-agent-linux-amd64", "mvm-agent-linux-arm64"} {
		b := []byte(n + " v9.0.0\n")
		files["v9.0.0/"+n] = b
		d := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	sig, _ := sign.SignRelease(key, []byte(sums.String()))
	files["v9.0.0/SHA256SUMS"], files["v9.0.0/SHA256SUMS.sig"], files["LATEST"] = []byte(sums.String()), sig, []byte("v9.0.0\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]; ok {
			_, _ = w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()

	cfg := t.TempDir()
	pub, _ := key.Public().MarshalText()
	pubFile := filepath.Join(cfg, "release.pub")
	if err := os.WriteFile(pubFile, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "config.toml"), []byte(fmt.Sprintf("[update]\nurl = %q\nkey = %q\n", srv.URL, pubFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"STATE", "CACHE", "SHARE"} {
		t.Setenv("MVM_"+d+"_DIR", t.TempDir())
	}
	t.Setenv("MVM_CONFIG_DIR", cfg)
	inst := t.TempDir()
	for _, b := range []string{"mvmctl", "mvm-agent"} {
		if err := os.WriteFile(filepath.Join(inst, b), []byte(b+" old\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mvm := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(args, "--install-dir", inst), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	read := func(b string) string {
		got, _ := os.ReadFile(filepath.Join(inst, b))
		return string(got)
	}
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64"}[goarch()]
	if arch == "" {
		t.Skip("the fake release has amd64 and arm64 binaries only")
	}

	if code, out, errs := mvm("update", "--check"); code != 0 || !strings.Contains(out, "v9.0.0") || read("mvmctl") != "mvmctl old\n" {
		t.Fatalf("check: %d %s %s", code, out, errs)
	}
	// A tampered binary: refused, nothing changes.
	good := files["v9.0.0/mvm-agent-linux-"+arch]
	files["v9.0.0/mvm-agent-linux-"+arch] = []byte("evil")
	if code, _, errs := mvm("update"); code != 1 || !strings.Contains(errs, "tampered") || read("mvmctl") != "mvmctl old\n" || read("mvm-agent") != "mvm-agent old\n" {
		t.Fatalf("tampered update: %d %s", code, errs)
	}
	files["v9.0.0/mvm-agent-linux-"+arch] = good
	code, out, errs := mvm("update", "--json")
	var res updateResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Latest != "v9.0.0" || len(res.Updated) != 2 {
		t.Fatalf("update: %d %s %s", code, out, errs)
	}
	if read("mvmctl") != "mvmctl-linux-"+arch+" v9.0.0\n" || read("mvmctl.prev") != "mvmctl old\n" {
		t.Fatalf("after update: %q, kept %q", read("mvmctl"), read("mvmctl.prev"))
	}
	if code, _, errs := mvm("update", "--rollback"); code != 0 || read("mvmctl") != "mvmctl old\n" || read("mvm-agent") != "mvm-agent old\n" {
		t.Fatalf("rollback: %d %s", code, errs)
	}
}

func TestUninstall(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"STATE", "CACHE", "SHARE", "CONFIG"} {
		dirs[d] = filepath.Join(root, strings.ToLower(d))
		if err := os.MkdirAll(dirs[d], 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv("MVM_"+d+"_DIR", dirs[d])
	}
	inst := t.TempDir()
	for _, b := range []string{"mvmctl", "mvmctl.prev", "mvm-agent", "unrelated-tool"} {
		if err := os.WriteFile(filepath.Join(inst, b), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mvm := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(args, "--install-dir", inst), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := mvm("uninstall", "--dry-run", "--purge", "--json")
	var plan []uninstallItem
	if code != 0 || json.Unmarshal([]byte(out), &plan) != nil {
		t.Fatalf("dry run: %d %s %s", code, out, errs)
	}
	var names []string
	for _, it := range plan {
		names = append(names, it.Kind+":"+filepath.Base(it.Name))
	}
	want := "binary:mvmctl binary:mvmctl.prev binary:mvm-agent directory:cache directory:state directory:share directory:config"
	if strings.Join(names, " ") != want {
		t.Fatalf("plan %v, want %s", names, want)
	}
	if _, err := os.Stat(filepath.Join(inst, "mvmctl")); err != nil {
		t.Fatal("dry run removed mvmctl")
	}
	if code, _, errs := mvm("uninstall"); code != 2 || !strings.Contains(errs, "--yes") {
		t.Fatalf("uninstall off a terminal without --yes: %d %s", code, errs)
	}
	if code, _, errs := mvm("uninstall", "--yes"); code != 0 {
		t.Fatalf("uninstall: %d %s", code, errs)
	}
	left, _ := os.ReadDir(inst)
	if len(left) != 1 || left[0].Name() != "unrelated-tool" {
		t.Fatalf("left in the install dir: %v", left)
	}
	if _, err := os.Stat(dirs["CONFIG"]); err != nil {
		t.Fatal("uninstall without --purge removed the config")
	}
	if code, _, errs := mvm("uninstall", "--yes", "--purge"); code != 0 {
		t.Fatalf("purge: %d %s", code, errs)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s still there after --purge", d)
		}
	}
}

func goarch() string { return runtimeGOARCH() }

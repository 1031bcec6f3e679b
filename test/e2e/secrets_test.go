package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecrets: secrets given to up are readable in the guest from a tmpfs
// at /run/secrets and are nowhere on the host's disk; start asks for them
// again; a snapshot needs --drop-secrets, which leaves the source and its
// clones without them.
func TestSecrets(t *testing.T) {
	const name, snap, clone = "e2e-secrets", "e2e-secrets-snap", "e2e-secrets-clone"
	pw, token := uniqueValue(t), uniqueValue(t)
	pwFile := filepath.Join(t.TempDir(), "db_password") // outside every mvm directory
	if err := os.WriteFile(pwFile, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"E2E_API_TOKEN=" + token}
	secretFlags := []string{"--secret", "db_password=@" + pwFile, "--secret", "api.token=env:E2E_API_TOKEN"}
	t.Cleanup(func() {
		mvm(t, time.Minute, "", "rm", "-f", name, clone)
		mvm(t, time.Minute, "", "snapshot", "rm", "-f", snap)
	})

	up := mvmWith(t, bootTimeout, "", env, append([]string{"up", "--name", name, "--memory", "128M"}, secretFlags...)...)
	if up.code != 0 {
		t.Fatalf("up: %s", up)
	}
	checkGuestSecrets := func(when string) {
		t.Helper()
		for file, want := range map[string]string{"db_password": pw, "api.token": token} {
			r := must(t, time.Minute, "exec", name, "--", "cat", "/run/secrets/"+file)
			if r.stdout != want {
				t.Fatalf("%s: /run/secrets/%s reads %q, want %q", when, file, r.stdout, want)
			}
		}
		// The minimal image has no service user: root's, 0400, in a 0700 tmpfs.
		r := must(t, time.Minute, "exec", name, "--", "stat", "-c", "%n %a %u %g", "/run/secrets", "/run/secrets/db_password", "/run/secrets/api.token")
		want := "/run/secrets 700 0 0\n/run/secrets/db_password 400 0 0\n/run/secrets/api.token 400 0 0\n"
		if r.stdout != want {
			t.Fatalf("%s: modes\n%s\nwant\n%s", when, r.stdout, want)
		}
		r = must(t, time.Minute, "exec", name, "--", "cat", "/proc/mounts")
		if !strings.Contains(r.stdout, "mvm-secrets /run/secrets tmpfs rw,nosuid,nodev,noexec") {
			t.Fatalf("%s: no secrets tmpfs in\n%s", when, r.stdout)
		}
	}
	checkGuestSecrets("after up")
	if r := must(t, time.Minute, "exec", name, "--", "cat", "/proc/cmdline"); !strings.Contains(r.stdout, "init_on_free=1") {
		t.Errorf("kernel of a VM with secrets does not zero freed pages: %s", r.stdout)
	}

	var in struct {
		Record struct {
			Dir     string   `json:"dir"`
			Secrets []string `json:"secrets"`
		} `json:"record"`
	}
	r := must(t, time.Minute, "inspect", name)
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatal(err)
	}
	if strings.Join(in.Record.Secrets, ",") != "db_password,api.token" {
		t.Fatalf("record lists secrets %v", in.Record.Secrets)
	}
	cache := os.Getenv("MVM_E2E_CACHE")
	if cache == "" {
		cache = filepath.Join(rootDir, "cache")
	}
	hostDirs := []string{in.Record.Dir, filepath.Join(rootDir, "state"), cache, filepath.Join(rootDir, "config")}
	assertNotOnHost(t, hostDirs, pw, token)

	// A snapshot would save them with the guest's memory.
	if r := mvm(t, time.Minute, "", "snapshot", "create", name, snap); r.code == 0 || !strings.Contains(r.stderr, "--drop-secrets") || !strings.Contains(r.stderr, "db_password") {
		t.Fatalf("snapshot of a VM with secrets: %s", r)
	}

	// The host kept no value: start must be given them again.
	must(t, 2*time.Minute, "down", name)
	if r := mvm(t, time.Minute, "", "start", name); r.code == 0 ||
		!strings.Contains(r.stderr, "was created with secrets db_password, api.token") ||
		!strings.Contains(r.stderr, "mvmctl start "+name+" --secret db_password=@FILE --secret api.token=@FILE") {
		t.Fatalf("start without the secrets: %s", r)
	}
	if r := mvmWith(t, bootTimeout, "", env, append([]string{"start", name}, secretFlags...)...); r.code != 0 {
		t.Fatalf("start with the secrets: %s", r)
	}
	checkGuestSecrets("after start")
	assertNotOnHost(t, hostDirs, pw, token)

	// --drop-secrets: the agent wipes and unmounts them, then the VM is saved.
	r = must(t, 2*time.Minute, "snapshot", "create", name, snap, "--drop-secrets")
	if !strings.Contains(r.stderr, "Dropped secrets db_password, api.token") {
		t.Errorf("snapshot create --drop-secrets says:\n%s", r.stderr)
	}
	noSecrets := func(vm string) {
		t.Helper()
		r := must(t, time.Minute, "exec", vm, "--", "sh", "-c", "ls -la /run/secrets 2>&1; grep -c mvm-secrets /proc/mounts || true")
		if !strings.Contains(r.stdout, "No such file or directory") || !strings.HasSuffix(r.stdout, "0\n") {
			t.Fatalf("%s still has secrets:\n%s", vm, r.stdout)
		}
	}
	noSecrets(name)
	must(t, 2*time.Minute, "up", "--from-snapshot", snap, "--name", clone)
	noSecrets(clone)
	assertNotOnHost(t, []string{in.Record.Dir, cache, filepath.Join(rootDir, "config"), filepath.Join(rootDir, "state", "vms")}, pw, token)
	// The memory image: the files were zeroed before saving, but pages the
	// guest freed (a cat's buffer, the agent's heap) are not scrubbed by the
	// guest kernel. Reported, not required.
	for _, v := range []string{pw, base64.StdEncoding.EncodeToString([]byte(pw))} {
		if where := findOnHost([]string{filepath.Join(rootDir, "state", "snapshots")}, v); len(where) > 0 {
			t.Logf("note: a form of the dropped secret is still in freed guest memory saved in %v", where)
		}
	}
}

// uniqueValue is a value that can only come from this test.
func uniqueValue(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "mvm-e2e-secret-" + hex.EncodeToString(b)
}

// assertNotOnHost fails if any regular file under dirs holds a value, raw
// or base64 (as it travels in the agent request).
func assertNotOnHost(t *testing.T, dirs []string, values ...string) {
	t.Helper()
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
			for _, p := range findOnHost(dirs, form) {
				if filepath.Base(p) == "mem" {
					// The QEMU backend maps guest RAM from this file in the VM
					// directory: the guest's tmpfs is in it too.
					t.Errorf("secret value in %s: guest RAM is a file on the host's disk (memory-backend-file in the VM directory), so the guest's tmpfs is on disk too", p)
				} else {
					t.Errorf("secret value found on the host's disk in %s", p)
				}
			}
		}
	}
}

func findOnHost(dirs []string, value string) []string {
	var where []string
	seen := map[string]bool{}
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() || seen[p] {
				return nil
			}
			seen[p] = true
			if fileContains(p, []byte(value)) {
				where = append(where, p)
			}
			return nil
		})
	}
	return where
}

// fileContains scans p in blocks (disk images and RAM files are hundreds
// of MiB: reading each whole kept GiBs in the test's heap), keeping the
// last len(v)-1 bytes of each block so a match across blocks is found.
func fileContains(p string, v []byte) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 0, 1<<20+len(v))
	keep := len(v) - 1
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if bytes.Contains(buf, v) {
			return true
		}
		if err != nil {
			return false
		}
		if len(buf) > keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
	}
}

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

// otherHost is a second mvm installation on this machine: its own cache,
// state, config and templates, as a clean host pulling what we push.
func otherHost(t *testing.T, config string) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mvmb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"cache", "state", "config", "share"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := "default_backend = \"qemu\"\ndefault_network = \"none\"\n" + config
	if err := os.WriteFile(filepath.Join(dir, "config", "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{
		"MVM_CACHE_DIR=" + filepath.Join(dir, "cache"), "MVM_STATE_DIR=" + filepath.Join(dir, "state"),
		"MVM_CONFIG_DIR=" + filepath.Join(dir, "config"), "MVM_SHARE_DIR=" + filepath.Join(dir, "share"),
	}
}

func mustWith(t *testing.T, timeout time.Duration, stdin string, env []string, args ...string) result {
	t.Helper()
	r := mvmWith(t, timeout, stdin, env, args...)
	if r.code != 0 {
		t.Fatalf("mvmctl %v failed:\n%s", args, r)
	}
	return r
}

// TestTemplateRegistry: a template with a snapshot is pushed, signed, to a
// real OCI registry (with TLS and basic auth) and to an S3 gateway; a clean
// host refuses it until it trusts the key, then pulls, verifies and boots
// it; a standard OCI client reads what we pushed; the S3 copy pulls back
// with identical digests; tampering is refused and leaves nothing behind.
func TestTemplateRegistry(t *testing.T) {
	reg := regtest.StartRegistry(t, regtest.RegistryOptions{TLS: true, Username: "e2e", Password: "pw-e2e"})
	const tpl = "e2e-rtpl"
	t.Cleanup(func() { mvm(t, time.Minute, "", "template", "delete", "-f", tpl) })
	ref := reg.Host + "/e2e/rtpl:v1"
	auth := []string{"--ca-file", reg.CAFile, "-u", "e2e", "--password-stdin"}

	must(t, time.Minute, "key", "generate", "e2e-signer")
	pub := filepath.Join(t.TempDir(), "signer.pub")
	r := must(t, time.Minute, "key", "export", "e2e-signer")
	if err := os.WriteFile(pub, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, time.Minute, "template", "create", tpl, "--from", "minimal", "--memory", "128M")
	must(t, 10*time.Minute, "template", "build", tpl, "--snapshot")

	if r := mvm(t, time.Minute, "wrong\n", append([]string{"template", "push", tpl, ref, "--key", "e2e-signer"}, auth...)...); r.code == 0 || !strings.Contains(r.stderr, "credentials") {
		t.Fatalf("push with a wrong password: %s", r)
	}
	var pushed struct {
		Digest   string `json:"digest"`
		SignedBy string `json:"signed_by"`
	}
	r = mvm(t, 5*time.Minute, "pw-e2e\n", append([]string{"template", "push", tpl, ref, "--key", "e2e-signer", "--json"}, auth...)...)
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pushed) != nil || !strings.HasPrefix(pushed.Digest, "sha256:") || pushed.SignedBy == "" {
		t.Fatalf("push: %s", r)
	}

	t.Run("a standard OCI client reads the artifact", func(t *testing.T) {
		crane, err := exec.LookPath("crane")
		if err != nil {
			if gp, gerr := exec.Command("go", "env", "GOPATH").Output(); gerr == nil {
				crane = filepath.Join(strings.TrimSpace(string(gp)), "bin", "crane")
			}
		}
		if _, err := os.Stat(crane); err != nil {
			t.Skip("needs crane (scripts/setup.sh installs it)")
		}
		c := exec.Command(crane, "manifest", reg.Host+"/e2e/rtpl@"+pushed.Digest)
		c.Env = append(os.Environ(), "SSL_CERT_FILE="+reg.CAFile)
		home := t.TempDir()
		_ = os.MkdirAll(filepath.Join(home, ".docker"), 0o700)
		_ = os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"ZTJlOnB3LWUyZQ=="}}}`), 0o600)
		c.Env = append(c.Env, "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
		out, err := c.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "application/vnd.mvm.template.v1") || !strings.Contains(string(out), "image/rootfs.ext4") {
			t.Fatalf("crane manifest: %v\n%s", err, out)
		}
	})

	// A clean host whose policy requires signatures from this registry.
	b := otherHost(t, "[trust]\nrequire_signatures_for = [\""+reg.Host+"\"]\n")
	t.Cleanup(func() { mvmWith(t, time.Minute, "", b, "rm", "-f", "e2e-rb") })
	pull := append([]string{"template", "pull", ref, "rtpl"}, auth...)
	if r := mvmWith(t, 5*time.Minute, "pw-e2e\n", b, pull...); r.code == 0 || !strings.Contains(r.stderr, "not trusted") {
		t.Fatalf("pull signed by an untrusted key: %s", r)
	}
	if r := mustWith(t, time.Minute, "", b, "template", "list", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("a refused pull left a template: %s", r.stdout)
	}
	if n := countFiles(t, envValue(b, "MVM_CACHE_DIR")); n != 0 {
		t.Fatalf("a refused pull left %d files in the cache", n)
	}
	mustWith(t, time.Minute, "", b, "key", "trust", pub)
	mustWith(t, 5*time.Minute, "pw-e2e\n", b, pull...)
	r = mustWith(t, time.Minute, "", b, "template", "verify", "rtpl")
	if !strings.Contains(r.stdout, pushed.SignedBy) || !strings.Contains(r.stdout, "files match") {
		t.Fatalf("verify of the pulled template: %s", r)
	}
	mustWith(t, 3*time.Minute, "", b, "up", "--template", "rtpl", "--name", "e2e-rb")
	if out := mustWith(t, time.Minute, "", b, "exec", "e2e-rb", "--", "hostname"); strings.TrimSpace(out.stdout) != "e2e-rb" {
		t.Fatalf("VM from the pulled template: %q", out.stdout)
	}
	mustWith(t, time.Minute, "", b, "rm", "-f", "e2e-rb")

	t.Run("a template without a snapshot boots cold from its own image", func(t *testing.T) {
		const plain = "e2e-rplain"
		t.Cleanup(func() {
			mvm(t, time.Minute, "", "template", "delete", "-f", plain)
			mvmWith(t, time.Minute, "", b, "rm", "-f", "e2e-rplain-vm")
		})
		must(t, time.Minute, "template", "create", plain, "--from", "minimal", "--memory", "128M", "--cpus", "1")
		must(t, 5*time.Minute, "template", "build", plain)
		pref := reg.Host + "/e2e/rplain:v1"
		mustWith(t, 5*time.Minute, "pw-e2e\n", nil, append([]string{"template", "push", plain, pref, "--key", "e2e-signer"}, auth...)...)
		mustWith(t, 5*time.Minute, "pw-e2e\n", b, append([]string{"template", "pull", pref}, auth...)...)
		// The clean host has no image cache: the template's files boot.
		mustWith(t, bootTimeout, "", b, "up", "--template", plain, "--name", "e2e-rplain-vm")
		if out := mustWith(t, time.Minute, "", b, "exec", "e2e-rplain-vm", "--", "hostname"); strings.TrimSpace(out.stdout) != "e2e-rplain-vm" {
			t.Fatalf("VM from the pulled plain template: %q", out.stdout)
		}
		if n := countFiles(t, filepath.Join(envValue(b, "MVM_CACHE_DIR"), "images")); n != 0 {
			t.Fatalf("booting a pulled template built %d image files instead of using its own", n)
		}
	})

	t.Run("a changed file fails verify", func(t *testing.T) {
		kern := filepath.Join(envValue(b, "MVM_SHARE_DIR"), "templates", "rtpl", "image", "vmlinuz")
		_ = os.Chmod(kern, 0o644)
		f, err := os.OpenFile(kern, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("x"))
		f.Close()
		if r := mvmWith(t, time.Minute, "", b, "template", "verify", "rtpl"); r.code == 0 || !strings.Contains(r.stderr, "changed") {
			t.Fatalf("verify after tampering: %s", r)
		}
	})

	t.Run("S3 round trip keeps the digests", func(t *testing.T) {
		s3 := regtest.StartS3(t)
		o := s3.Options()
		env := []string{"AWS_ACCESS_KEY_ID=" + o.Username, "AWS_SECRET_ACCESS_KEY=" + o.Password, "MVM_S3_ENDPOINT=" + s3.Endpoint}
		sref := s3.Addr("e2e/rtpl") + ":v1"
		var sp struct {
			Digest string `json:"digest"`
		}
		r := mustWith(t, 5*time.Minute, "", env, "template", "push", tpl, sref, "--key", "e2e-signer", "--json")
		if json.Unmarshal([]byte(r.stdout), &sp) != nil || sp.Digest != pushed.Digest {
			t.Fatalf("S3 push digest %q, registry push %q: %s", sp.Digest, pushed.Digest, r)
		}
		c := append(otherHost(t, ""), env...)
		mustWith(t, time.Minute, "", c, "key", "trust", pub)
		r = mustWith(t, 5*time.Minute, "", c, "template", "pull", sref, "--json")
		var pr struct {
			Digest   string `json:"digest"`
			SignedBy string `json:"signed_by"`
		}
		if json.Unmarshal([]byte(r.stdout), &pr) != nil || pr.Digest != pushed.Digest || pr.SignedBy != pushed.SignedBy {
			t.Fatalf("S3 pull: %s", r)
		}
		if r := mvmWith(t, time.Minute, "", env, "template", "push", tpl, s3.Addr("e2e/rtpl")+":v2", "--no-sign", "-u", "nobody", "--password-stdin"); r.code == 0 {
			t.Fatalf("S3 push with a wrong key succeeded: %s", r)
		}
	})
}

// countFiles counts regular files under dir.
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

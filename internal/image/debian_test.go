package image

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEnsureDebianPython builds the catalog's python image from Debian
// packages (downloads from the host's Debian mirror), checks the rootfs and,
// as root, runs python3 from the built filesystem in a chroot.
func TestEnsureDebianPython(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages and builds a rootfs; skipped with -short")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("needs mmdebstrap (package mmdebstrap)")
	}
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// MVM_TEST_IMAGE_CACHE lets repeated runs share the bootstrap tarball.
	cache := os.Getenv("MVM_TEST_IMAGE_CACHE")
	if cache == "" {
		cache = filepath.Join(t.TempDir(), "images")
	}
	r, err := Lookup("python")
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	start := time.Now()
	a, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent,
		Progress: func(s string) { stages = append(stages, s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("python image %v (stages %v)", time.Since(start), stages)
	fsck(t, a.Rootfs)

	ls := debugfs(t, a.Rootfs, "stat /usr/bin/python3")
	if !strings.Contains(ls, "Type: symlink") && !strings.Contains(ls, "Type: regular") {
		t.Fatalf("/usr/bin/python3 missing:\n%s", ls)
	}
	if s := debugfs(t, a.Rootfs, "stat /usr/sbin/mvm-agent"); !strings.Contains(s, "Mode:  0755") {
		t.Errorf("agent not installed through the /sbin link:\n%s", s)
	}
	if s := debugfs(t, a.Rootfs, "ls /usr/share/man"); strings.Contains(s, "man1") {
		t.Errorf("manual pages were not excluded: %s", s)
	}
	var hc GuestHealthCheck
	if err := json.Unmarshal([]byte(debugfs(t, a.Rootfs, "cat /etc/mvm/health.d/python.json")), &hc); err != nil ||
		hc.Command[0] != "/usr/bin/python3" || hc.IntervalMS != 30000 {
		t.Errorf("health check %+v, %v", hc, err)
	}
	// Non-root owners from the packages survive (e.g. /etc/shadow group shadow).
	if s := debugfs(t, a.Rootfs, "stat /etc/shadow"); strings.Contains(s, "Group:     0 ") {
		t.Errorf("/etc/shadow lost its group:\n%s", s)
	}

	// A second recipe with the same suite and packages reuses the bootstrap.
	r2 := *r
	r2.Name = "python-extra"
	r2.Files = []FileSpec{{Path: "/opt/app/main.py", Content: "print(6*7)\n", Mode: Mode{Perm: 0o755, Set: true}}}
	start = time.Now()
	var stages2 []string
	b, err := EnsureRecipe(ctx, &r2, BuildOptions{CacheDir: cache, AgentPath: agent,
		Progress: func(s string) { stages2 = append(stages2, s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second Debian image (bootstrap cached) %v", time.Since(start))
	if b.Digest == a.Digest {
		t.Error("adding a file kept the digest")
	}
	fsck(t, b.Rootfs)
	if s := debugfs(t, b.Rootfs, "cat /opt/app/main.py"); s != "print(6*7)\n" {
		t.Errorf("main.py = %q", s)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: skipping the chroot run of python3")
		return
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	dfs, _ := lookTool("debugfs", "e2fsprogs")
	if out, err := exec.CommandContext(ctx, dfs, "-R", "rdump / "+root, b.Rootfs).CombinedOutput(); err != nil {
		t.Fatalf("rdump: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "chroot", root, "/usr/bin/python3", "/opt/app/main.py").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("python3 in the built rootfs: %q, %v", out, err)
	}
}

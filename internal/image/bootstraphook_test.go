package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The customize hook edits only the chroot it is given, and refuses paths
// that would make it edit the build host itself.
func TestBootstrapHookStaysInChroot(t *testing.T) {
	for _, bad := range []string{"", "/"} {
		if err := exec.Command("sh", "-c", bootstrapHook, "hook", bad).Run(); err == nil {
			t.Fatalf("hook accepted chroot path %q", bad)
		}
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "resolv.conf"), []byte("nameserver 192.0.2.1\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("builder\n"), 0o755)
	if out, err := exec.Command("sh", "-c", bootstrapHook, "hook", root).CombinedOutput(); err != nil {
		t.Fatalf("hook: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "resolv.conf")); !os.IsNotExist(err) {
		t.Fatal("resolv.conf kept")
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc", "hostname"))
	st, _ := os.Stat(filepath.Join(root, "etc", "hostname"))
	if string(b) != "mvm\n" || st.Mode().Perm() != 0o644 {
		t.Fatalf("hostname %q mode %v", b, st.Mode())
	}
}

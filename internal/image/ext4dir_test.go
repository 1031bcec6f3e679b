package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExt4FromDir(t *testing.T) {
	if _, err := lookTool("mkfs.ext4", "e2fsprogs"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs)")
	}
	debugfs, err := lookTool("debugfs", "e2fsprogs")
	if err != nil {
		t.Skip("needs debugfs (e2fsprogs)")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("ctr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	size, err := Ext4FromDir(context.Background(), dir, out, "mvmctr-test", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != size || size < 8<<20 {
		t.Fatalf("image %v size %d (reported %d)", err, fi.Size(), size)
	}
	got, err := exec.Command(debugfs, "-R", "cat /etc/hostname", out).Output()
	if err != nil || string(got) != "ctr\n" {
		t.Fatalf("debugfs cat: %q %v", got, err)
	}
	lbl, err := exec.Command(debugfs, "-R", "stats", out).Output()
	if err != nil || !strings.Contains(string(lbl), "mvmctr-test") {
		t.Fatalf("label missing from superblock: %v", err)
	}
}

package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewMemFile(t *testing.T) {
	shm, dir := t.TempDir(), t.TempDir()
	old := shmDir
	shmDir = shm
	t.Cleanup(func() { shmDir = old })
	p, err := newMemFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != shm || !strings.HasPrefix(filepath.Base(p), shmPrefix) {
		t.Fatalf("RAM file %s is not on the tmpfs", p)
	}
	st, err := os.Lstat(p)
	if err != nil || st.Mode().Perm() != 0o600 || !st.Mode().IsRegular() {
		t.Fatalf("RAM file %v %v: want a 0600 regular file", st, err)
	}
	if !ownMemFile(p, dir) || ownMemFile(filepath.Join(shm, "other.mem"), dir) || ownMemFile("/snap/dir/mem", dir) {
		t.Fatal("ownMemFile misjudges")
	}
	q, _ := newMemFile(dir)
	if q == p {
		t.Fatal("two VMs got one RAM file")
	}
	// No usable tmpfs: the VM directory.
	shmDir = filepath.Join(shm, "missing")
	if p, err := newMemFile(dir); err != nil || p != filepath.Join(dir, memFile) {
		t.Fatalf("fallback: %s, %v", p, err)
	}
}

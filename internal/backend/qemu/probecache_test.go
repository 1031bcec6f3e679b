package qemu

import (
	"os"
	"testing"
)

func TestProbeRemembered(t *testing.T) {
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	key := "/usr/bin/qemu-system-x86_64\x00on\x00100:100\x000\x0012345\x00mtime"
	if probeRemembered(key) {
		t.Fatal("remembered before any probe")
	}
	rememberProbe(key)
	if !probeRemembered(key) {
		t.Fatal("a remembered success is not found")
	}
	if probeRemembered(key + "x") {
		t.Fatal("another binary or option set counts as probed")
	}
	// A file that is not the key (a hash clash, a stray write) is no proof.
	if err := os.WriteFile(probeFile(key), []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	if probeRemembered(key) {
		t.Fatal("a file without the key counts as a success")
	}
}

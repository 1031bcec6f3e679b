//go:build linux

package kvmprobe

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The verdict depends on the host; what must hold everywhere is that the
// probe answers quickly, explains itself and caches the answer.
func TestProbe(t *testing.T) {
	start := time.Now()
	ok, why := Probe(context.Background())
	if d := time.Since(start); d > Timeout+time.Second {
		t.Fatalf("probe took %v", d)
	}
	if why == "" {
		t.Fatal("empty reason")
	}
	t.Logf("usable=%v reason=%q", ok, why)
	start = time.Now()
	ok2, why2 := Probe(context.Background())
	if ok2 != ok || why2 != why || time.Since(start) > 10*time.Millisecond {
		t.Fatal("second probe was not served from the cache")
	}
}

func TestPVMOnly(t *testing.T) {
	for _, tc := range []struct {
		mods []string
		pvm  bool
	}{
		{[]string{"kvm", "kvm_pvm"}, true},
		{[]string{"kvm", "kvm_pvm", "kvm_intel"}, false},
		{[]string{"kvm", "kvm_amd"}, false},
		{nil, false}, // built-in KVM (arm64, custom kernels)
	} {
		root := t.TempDir()
		for _, m := range tc.mods {
			if err := os.Mkdir(filepath.Join(root, m), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if got := pvmOnly(root) != ""; got != tc.pvm {
			t.Errorf("modules %v: pvm = %v, want %v", tc.mods, got, tc.pvm)
		}
	}
}

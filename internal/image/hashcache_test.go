package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHashFileCached(t *testing.T) {
	cache := t.TempDir()
	f := filepath.Join(t.TempDir(), "agent")
	write := func(s string) {
		if err := os.WriteFile(f, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	memos := func() []string {
		m, _ := filepath.Glob(filepath.Join(cache, hashCacheDir, "*"))
		return m
	}
	write("one")
	want, _ := hashFile(f)
	tests := []struct {
		name   string
		before func()
		want   func() string
	}{
		{"first hash is real", func() {}, func() string { return want }},
		{"remembered", func() {
			// Prove the memo is read: make it lie for the same key.
			m := memos()
			if len(m) != 1 {
				t.Fatalf("memos: %v", m)
			}
			key, _ := statKey(f)
			os.WriteFile(m[0], []byte(key+"\n"+strings.Repeat("ab", 32)+"\n"), 0o600)
		}, func() string { return strings.Repeat("ab", 32) }},
		{"a rewrite misses", func() {
			time.Sleep(10 * time.Millisecond) // a new mtime/ctime even on coarse clocks
			write("two")
		}, func() string { s, _ := hashFile(f); return s }},
		{"a corrupt memo is ignored", func() {
			for _, m := range memos() {
				os.WriteFile(m, []byte("garbage"), 0o600)
			}
		}, func() string { s, _ := hashFile(f); return s }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.before()
			got, err := hashFileCached(cache, f)
			if err != nil {
				t.Fatal(err)
			}
			if w := tt.want(); got != w {
				t.Fatalf("got %s, want %s", got, w)
			}
		})
	}
	if _, err := hashFileCached(cache, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing file hashed")
	}
}

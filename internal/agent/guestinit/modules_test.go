package guestinit

import (
	"slices"
	"strings"
	"testing"
)

func TestParseModuleList(t *testing.T) {
	got, err := parseModuleList(strings.NewReader("virtio.ko\n\n# comment\n  virtio_ring.ko  \nvirtio_blk.ko.xz\n"))
	if err != nil || !slices.Equal(got, []string{"virtio.ko", "virtio_ring.ko", "virtio_blk.ko.xz"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, bad := range []string{"../evil.ko\n", "a/b.ko\n", "..\n"} {
		if _, err := parseModuleList(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseModuleList(f *testing.F) {
	f.Add("virtio.ko\n#x\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		names, err := parseModuleList(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, n := range names {
			if n == "" || strings.Contains(n, "/") || n == ".." {
				t.Fatalf("unsafe name %q", n)
			}
		}
	})
}

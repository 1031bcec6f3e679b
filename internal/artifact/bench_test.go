package artifact

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkPackPushPull measures the whole trip of a template (the
// fixture's kernel, rootfs and a 256 MiB RAM file, mostly holes) through
// the in-memory store; MB/s counts the files' apparent size.
func BenchmarkPackPushPull(b *testing.B) {
	in := makeTemplate(b, b.TempDir(), bigMem)
	var total int64
	for _, i := range in {
		fi, err := os.Stat(i.Path)
		if err != nil {
			b.Fatal(err)
		}
		total += fi.Size()
	}
	ctx := context.Background()
	b.SetBytes(total)
	for n := 0; b.Loop(); n++ {
		p, err := Pack(ctx, in, PackOptions{TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		s := newMemStore()
		if _, err := Push(ctx, s, "v1", p, PushOptions{}); err != nil {
			b.Fatal(err)
		}
		p.Close()
		dst := filepath.Join(b.TempDir(), fmt.Sprint(n))
		if _, err := Pull(ctx, s, "v1", dst, PullOptions{BlobDir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
	}
}

package artifact

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkPackPushPull measures the whole trip of a template (the
// fixture's kernel, rootfs and a 256 MiB RAM file, mostly holes) through
// the in-memory store; MB/s counts the files' apparent size.
func BenchmarkPackPushPull(b *testing.B) {
	in := makeTemplate(b, b.TempDir(), bigMem)
	total := inputSize(b, in)
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

func inputSize(b *testing.B, in []Input) int64 {
	var total int64
	for _, i := range in {
		fi, err := os.Stat(i.Path)
		if err != nil {
			b.Fatal(err)
		}
		total += fi.Size()
	}
	return total
}

// makeSnapshotTemplate writes files shaped like a built snapshot template:
// a kernel that barely compresses (14 MiB), an initrd that does (8 MiB), a
// sparse 320 MiB rootfs with 9 MiB of data, a dense 128 MiB RAM file three
// quarters of whose pages hold data (compressing about 3:1), and small
// JSON.
func makeSnapshotTemplate(b *testing.B, dir string) []Input {
	b.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{5}))
	random := func(n int) []byte {
		p := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				p[i+j] = byte(v >> (8 * j))
			}
		}
		return p
	}
	text := func(n int) []byte {
		var buf bytes.Buffer
		for i := 0; buf.Len() < n; i++ {
			fmt.Fprintf(&buf, "%08x some guest memory or file system text %d\n", rng.Uint32(), i%97)
		}
		return buf.Bytes()[:n]
	}
	mixed := func(n int, randomShare float64) []byte {
		var buf bytes.Buffer
		for buf.Len() < n {
			if rng.Float64() < randomShare {
				buf.Write(random(4096))
			} else {
				buf.Write(text(4096))
			}
		}
		return buf.Bytes()[:n]
	}
	mem := make([]byte, 128<<20)
	for off := 0; off < len(mem); off += 4096 {
		if rng.IntN(4) != 0 {
			copy(mem[off:], mixed(4096, 0.3))
		}
	}
	type part struct {
		off  int64
		data []byte
	}
	files := []struct {
		name  string
		size  int64
		parts []part
	}{
		{"image/vmlinuz", 0, []part{{0, mixed(14<<20, 0.97)}}},
		{"image/initrd.img", 0, []part{{0, mixed(8<<20, 0.4)}}},
		{"image/rootfs.ext4", 320 << 20, []part{{0, mixed(8<<20, 0.2)}, {40 << 20, mixed(1<<20, 0.2)}, {130 << 20, text(64 << 10)}}},
		{"image/manifest.json", 0, []part{{0, text(4 << 10)}}},
		{"snapshot/mem", 0, []part{{0, mem}}},
		{"snapshot/state", 0, []part{{0, mixed(70<<10, 0.5)}}},
		{"snapshot/snapshot.json", 0, []part{{0, text(2500)}}},
	}
	var in []Input
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		for _, pt := range f.parts {
			if _, err := fh.WriteAt(pt.data, pt.off); err != nil {
				b.Fatal(err)
			}
		}
		if f.size > 0 {
			if err := fh.Truncate(f.size); err != nil {
				b.Fatal(err)
			}
		}
		if err := fh.Close(); err != nil {
			b.Fatal(err)
		}
		in = append(in, Input{Name: f.name, Path: p})
	}
	return in
}

// BenchmarkSnapshotPack packs the snapshot-shaped template from scratch;
// MB/s counts the files' apparent size.
func BenchmarkSnapshotPack(b *testing.B) {
	in := makeSnapshotTemplate(b, b.TempDir())
	b.SetBytes(inputSize(b, in))
	for b.Loop() {
		p, err := Pack(context.Background(), in, PackOptions{TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}

// BenchmarkSnapshotPull pulls the snapshot-shaped template from the
// in-memory store into an empty blob cache (cold) and into one that holds
// every blob already (warm), and cold without waiting for the disk
// (nosync); MB/s counts the files' apparent size.
func BenchmarkSnapshotPull(b *testing.B) {
	in := makeSnapshotTemplate(b, b.TempDir())
	ctx := context.Background()
	p, err := Pack(ctx, in, PackOptions{TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	s := newMemStore()
	if _, err := Push(ctx, s, "v1", p, PushOptions{}); err != nil {
		b.Fatal(err)
	}
	p.Close()
	var blobBytes int64
	for _, d := range p.Blobs {
		blobBytes += d.Size
	}
	b.Logf("artifact: %.1f MiB of blobs for %.1f MiB of files", float64(blobBytes)/(1<<20), float64(inputSize(b, in))/(1<<20))
	for _, tc := range []struct {
		name string
		warm bool
		opts PullOptions
	}{
		{"cold", false, PullOptions{}},
		{"warm", true, PullOptions{}},
		{"nosync", false, PullOptions{SkipSync: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(inputSize(b, in))
			root := b.TempDir()
			warmCache := filepath.Join(root, "warm")
			if tc.warm {
				if _, err := Pull(ctx, s, "v1", filepath.Join(root, "first"), PullOptions{BlobDir: warmCache}); err != nil {
					b.Fatal(err)
				}
			}
			for n := 0; b.Loop(); n++ {
				opts := tc.opts
				opts.BlobDir = warmCache
				if !tc.warm {
					opts.BlobDir = filepath.Join(root, fmt.Sprint("blobs", n))
				}
				dst := filepath.Join(root, fmt.Sprint(n))
				if _, err := Pull(ctx, s, "v1", dst, opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dst)
				if !tc.warm {
					os.RemoveAll(opts.BlobDir)
				}
				b.StartTimer()
			}
		})
	}
}

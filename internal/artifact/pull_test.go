package artifact

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestSharedChunks: chunks that are one blob are fetched once and all
// written, whether the blob holds data (read again from the cache) or only
// zeros (left as holes); from a cold cache and a warm one alike.
func TestSharedChunks(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewChaCha8([32]byte{4}))
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(rng.Uint32())
	}
	var content []byte
	for i := range 10 {
		if i == 3 || i == 7 {
			content = append(content, make([]byte, len(block))...)
		} else {
			content = append(content, block...)
		}
	}
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	in := []Input{{Name: "f", Path: p}}
	pk := pack(t, in, PackOptions{ChunkSize: 1 << 20})
	if len(pk.Blobs) != 2 {
		t.Fatalf("%d blobs, want 2 (the block and zeros)", len(pk.Blobs))
	}
	s := newMemStore()
	push(t, s, "v1", pk)
	blobs := filepath.Join(t.TempDir(), "blobs")
	for _, run := range []string{"cold", "warm"} {
		t.Run(run, func(t *testing.T) {
			s.resetReads()
			dst := filepath.Join(t.TempDir(), "tpl")
			var mu sync.Mutex
			var phases []Phase
			res, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs, Progress: func(pr Progress) {
				mu.Lock()
				defer mu.Unlock()
				if len(phases) == 0 || phases[len(phases)-1] != pr.Phase {
					phases = append(phases, pr.Phase)
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			assertSame(t, in, dst, res.Config)
			want := map[string]int{"cold": 3, "warm": 1} // the config, and each blob once
			if gets, _ := s.reads(); gets != want[run] {
				t.Errorf("%d blob reads, want %d", gets, want[run])
			}
			if len(phases) != 2 || phases[0] != PhaseDownload || phases[1] != PhaseAssemble {
				t.Errorf("progress phases %v, want download then assemble", phases)
			}
		})
	}
}

// TestVerifyFiles: a config whose hash of a many-chunk file disagrees with
// its chunks is refused when files are verified. Without that, the pull
// gives exactly what the verified chunks hold (the hash is derived data).
func TestVerifyFiles(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{ChunkSize: 1 << 20})
	s := newMemStore()
	push(t, s, "v1", p)
	republish(t, s, p, "v1", func(c *Config, _ *Manifest) {
		for i := range c.Files {
			if c.Files[i].Name == "image/rootfs.ext4" {
				c.Files[i].SHA256 = strings.Repeat("a", 64)
			}
		}
	})
	blobs := filepath.Join(t.TempDir(), "blobs")
	dst := filepath.Join(t.TempDir(), "tpl")
	_, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs, VerifyFiles: true})
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("Pull with VerifyFiles: %v, want ErrDigest", err)
	}
	assertNothingAt(t, dst)

	res, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs})
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, in, dst, res.Config)

	// And the untouched artifact passes with VerifyFiles.
	s2 := newMemStore()
	push(t, s2, "v1", p)
	dst2 := filepath.Join(t.TempDir(), "tpl")
	if _, err := Pull(context.Background(), s2, "v1", dst2, PullOptions{BlobDir: blobs, VerifyFiles: true}); err != nil {
		t.Fatal(err)
	}
	assertSame(t, in, dst2, &p.Config)
}

// TestPulledConfigBytes: Pull hands back the config blob it verified.
func TestPulledConfigBytes(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{})
	s := newMemStore()
	push(t, s, "v1", p)
	res, err := Pull(context.Background(), s, "v1", filepath.Join(t.TempDir(), "tpl"), PullOptions{BlobDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.ConfigBytes, p.ConfigBytes) {
		t.Error("ConfigBytes differ from the pushed config")
	}
}

// TestExtents: a chunk's blob holds only its data; zero runs at either end
// and inner ones of at least ExtentGap are left out and come back as
// holes, shorter inner ones stay in. Compressible and incompressible data
// alike (the latter is stored raw, read a second time).
func TestExtents(t *testing.T) {
	const B, K = ExtentBlock, 1 << 10
	rng := rand.New(rand.NewChaCha8([32]byte{9}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	text := func(n int) []byte { return bytes.Repeat([]byte("mvm extents "), n/12+1)[:n] }
	type span struct {
		zero bool
		n    int
	}
	for _, tc := range []struct {
		name  string
		spans []span
		fill  func(int) []byte
		chunk int64
		want  [][][2]int64 // per chunk
	}{
		{"all data", []span{{false, 4 * B}}, text, 8 * B, [][][2]int64{{{0, 4 * B}}}},
		{"all zeros", []span{{true, 4 * B}}, text, 8 * B, [][][2]int64{{}}},
		{"leading and trailing zeros", []span{{true, B}, {false, B}, {true, B}}, text, 8 * B, [][][2]int64{{{B, B}}}},
		{"short inner gap stays", []span{{false, B}, {true, ExtentGap - B}, {false, 10}}, text, 8 * B,
			[][][2]int64{{{0, ExtentGap + 10}}}},
		{"long inner gap splits", []span{{false, B}, {true, ExtentGap}, {false, 3 * K}}, text, 8 * B,
			[][][2]int64{{{0, B}, {B + ExtentGap, 3 * K}}}},
		{"incompressible with a gap", []span{{false, 2 * B}, {true, 2 * ExtentGap}, {false, B}}, random, 16 * B,
			[][][2]int64{{{0, 2 * B}, {2*B + 2*ExtentGap, B}}}},
		{"per chunk", []span{{false, B}, {true, 2 * B}, {false, B}}, text, 2 * B,
			[][][2]int64{{{0, B}}, {{B, B}}}},
		{"zeros inside a block are data", []span{{false, 10}, {true, B - 20}, {false, 10}}, text, 8 * B,
			[][][2]int64{{{0, B}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var content []byte
			for _, s := range tc.spans {
				if s.zero {
					content = append(content, make([]byte, s.n)...)
				} else {
					content = append(content, tc.fill(s.n)...)
				}
			}
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
			in := []Input{{Name: "f", Path: p}}
			pk := pack(t, in, PackOptions{ChunkSize: tc.chunk, CompressMin: 1})
			f := pk.Config.Files[0]
			if len(f.Chunks) != len(tc.want) {
				t.Fatalf("%d chunks, want %d", len(f.Chunks), len(tc.want))
			}
			for i, c := range f.Chunks {
				if !slices.Equal(c.Data, tc.want[i]) {
					t.Errorf("chunk %d: extents %v, want %v", i, c.Data, tc.want[i])
				}
			}
			s := newMemStore()
			push(t, s, "v1", pk)
			dst := filepath.Join(t.TempDir(), "tpl")
			res, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: filepath.Join(t.TempDir(), "blobs"), VerifyFiles: true})
			if err != nil {
				t.Fatal(err)
			}
			assertSame(t, in, dst, res.Config)
			if sparseSupported(t, dir) {
				var data int64
				for _, c := range f.Chunks {
					data += c.DataSize()
				}
				// Allocation is in filesystem blocks, at most one partial
				// block either side of each extent.
				var ext int64
				for _, c := range f.Chunks {
					ext += int64(len(c.Data))
				}
				if got := allocated(t, filepath.Join(dst, "f")); got > data+ext*2*sparseBlock {
					t.Errorf("pulled file allocates %d bytes for %d of data", got, data)
				}
			}
		})
	}
}

func TestChunkSizeFor(t *testing.T) {
	const G = 1 << 30
	for _, tc := range []struct {
		sizes []int64
		want  int64
	}{
		{nil, DefaultChunkSize},
		{[]int64{0, 10, 320 << 20, 128 << 20}, DefaultChunkSize},
		{[]int64{32 * G}, DefaultChunkSize},       // exactly MaxChunks/2 chunks
		{[]int64{32*G + 1}, 2 * DefaultChunkSize}, // one more
		{[]int64{100 * G, 28 * G}, 4 * DefaultChunkSize},
		{[]int64{4096 * G}, MaxChunkSize}, // capped; Pack then refuses it
	} {
		got := chunkSizeFor(tc.sizes)
		if got != tc.want {
			t.Errorf("chunkSizeFor(%v) = %d, want %d", tc.sizes, got, tc.want)
		}
		if got < MaxChunkSize && countChunks(tc.sizes, got) > MaxChunks/2 {
			t.Errorf("chunkSizeFor(%v) = %d gives %d chunks", tc.sizes, got, countChunks(tc.sizes, got))
		}
	}
}

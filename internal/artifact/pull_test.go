package artifact

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
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

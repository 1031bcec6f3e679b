package artifact

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

// countingStore counts uploads to a real store.
type countingStore struct {
	registry.Store
	puts  atomic.Int64
	reads atomic.Int64
	from  atomic.Int64 // largest offset asked for
}

func (c *countingStore) PutBlob(ctx context.Context, d registry.Descriptor, r io.Reader) error {
	c.puts.Add(1)
	return c.Store.PutBlob(ctx, d, r)
}

func (c *countingStore) GetBlob(ctx context.Context, d registry.Descriptor, offset int64) (io.ReadCloser, error) {
	c.reads.Add(1)
	for {
		if cur := c.from.Load(); offset <= cur || c.from.CompareAndSwap(cur, offset) {
			break
		}
	}
	return c.Store.GetBlob(ctx, d, offset)
}

// TestRealStores runs push, re-push, pull and an interrupted pull against
// the real servers regtest launches (skipped where one is not installed).
func TestRealStores(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // none of the user's logins
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{ChunkSize: 1 << 20, Name: "web"})
	for _, tc := range []struct {
		name  string
		open  func(t *testing.T) (registry.Store, string)
		plain bool
	}{
		{"docker-registry", func(t *testing.T) (registry.Store, string) {
			reg := regtest.StartRegistry(t, regtest.RegistryOptions{})
			s, err := registry.Open(reg.Repo("tpl/web"), reg.Options())
			if err != nil {
				t.Fatal(err)
			}
			return s, reg.Repo("tpl/web")
		}, true},
		{"s3 (versitygw)", func(t *testing.T) (registry.Store, string) {
			s3 := regtest.StartS3(t)
			s, err := registry.Open(s3.Addr("tpl/web"), s3.Options())
			if err != nil {
				t.Fatal(err)
			}
			return s, ""
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			real, repo := tc.open(t)
			s := &countingStore{Store: real}
			ctx := context.Background()
			d := push(t, s, "v1", p)
			if n := s.puts.Load(); n != int64(len(p.Blobs))+1 {
				t.Errorf("first push uploaded %d blobs, want %d", n, len(p.Blobs)+1)
			}
			if _, err := Push(ctx, s, "v2", p, PushOptions{}); err != nil {
				t.Fatal(err)
			}
			if n := s.puts.Load(); n != int64(len(p.Blobs))+1 {
				t.Errorf("second push uploaded %d more blobs, want none", n-int64(len(p.Blobs))-1)
			}

			for _, ref := range []string{"v1", d.Digest} {
				dst := filepath.Join(t.TempDir(), "tpl")
				res, err := Pull(ctx, s, ref, dst, PullOptions{BlobDir: t.TempDir()})
				if err != nil {
					t.Fatalf("Pull %s: %v", ref, err)
				}
				assertSame(t, in, dst, res.Config)
			}

			// Cut the connection 1.5 MiB in (inside the kernel's second
			// chunk), then resume with a Range request.
			blobs := t.TempDir()
			dst := filepath.Join(t.TempDir(), "tpl")
			flaky := &failAfter{Store: s, budget: p.ConfigDesc.Size + 3<<19}
			if _, err := Pull(ctx, flaky, "v1", dst, PullOptions{BlobDir: blobs, Concurrency: 1}); !errors.Is(err, errInjected) {
				t.Fatalf("interrupted Pull: %v", err)
			}
			assertNothingAt(t, dst)
			s.from.Store(0)
			if _, err := Pull(ctx, s, "v1", dst, PullOptions{BlobDir: blobs}); err != nil {
				t.Fatalf("resumed Pull: %v", err)
			}
			if s.from.Load() == 0 {
				t.Error("resumed pull asked for no offset > 0")
			}
			assertSame(t, in, dst, &p.Config)

			if tc.plain {
				orasPull(t, repo+":v1", in, &p.Config)
			}
		})
	}
}

// orasPull checks the artifact is usable without mvm: oras writes each
// layer to its title, and a file is its chunks in order, each a zstd-
// decompressed or raw blob of data extents placed where the config says,
// zeros between.
func orasPull(t *testing.T, ref string, in []Input, cfg *Config) {
	oras := regtest.Binary(t, "oras", regtest.InstallOras)
	out := t.TempDir()
	cmd := exec.Command(oras, "pull", "--plain-http", "-o", out, ref)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("oras pull: %v\n%s", err, b)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, i := range in {
		want, err := os.ReadFile(i.Path)
		if err != nil {
			t.Fatal(err)
		}
		parts, _ := filepath.Glob(filepath.Join(out, filepath.FromSlash(i.Name)) + ".[0-9][0-9][0-9][0-9]*")
		if len(want) > 0 && len(parts) == 0 {
			t.Errorf("%s: oras wrote no parts", i.Name)
		}
		var file *File
		for j := range cfg.Files {
			if cfg.Files[j].Name == i.Name {
				file = &cfg.Files[j]
			}
		}
		if file == nil || len(file.Chunks) != len(parts) {
			t.Fatalf("%s: %d parts for the config's chunks", i.Name, len(parts))
		}
		got := make([]byte, file.Size)
		for j, p := range parts {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Ext(p) == ".zst" {
				if b, err = dec.DecodeAll(b, nil); err != nil {
					t.Fatalf("%s: %v", p, err)
				}
			}
			c := file.Chunks[j]
			for _, e := range c.Data {
				if int64(len(b)) < e[1] {
					t.Fatalf("%s: part shorter than its extents", p)
				}
				copy(got[c.Offset+e[0]:], b[:e[1]])
				b = b[e[1]:]
			}
			if len(b) != 0 {
				t.Fatalf("%s: %d bytes past its extents", p, len(b))
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: oras gave %d bytes in %d parts, not the file", i.Name, len(got), len(parts))
		}
	}
}

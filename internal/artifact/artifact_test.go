package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mvm-dev/mvm/internal/registry"
)

// bigMem is the RAM file size of the round trip: several default chunks.
const bigMem = 256 << 20

// smallMem keeps the other tests quick.
const smallMem = 16 << 20

// makeTemplate writes a template-like file set under dir: incompressible
// kernel, sparse compressible rootfs, a sparse RAM file of memSize bytes
// with a few pages of data (one across a 64 MiB chunk boundary when it is
// that large), small JSON and an empty file.
func makeTemplate(t testing.TB, dir string, memSize int64) []Input {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	text := func(n int) []byte {
		var b bytes.Buffer
		for i := 0; b.Len() < n; i++ {
			b.WriteString("line of a compressible rootfs block ")
			b.WriteString(strings.Repeat("x", i%17))
			b.WriteByte('\n')
		}
		return b.Bytes()[:n]
	}
	type part struct {
		off  int64
		data []byte
	}
	files := []struct {
		name string
		size int64
		perm os.FileMode
		data []part
	}{
		{"config.json", 0, 0o644, []part{{0, []byte(`{"cpus":2,"memMiB":256}`)}}},
		{"image/vmlinuz", 0, 0o644, []part{{0, random(3<<20 + 123)}}},
		{"image/rootfs.ext4", 24 << 20, 0o644, []part{{0, text(1 << 20)}, {5 << 20, text(300 << 10)}, {20<<20 + 17, random(64 << 10)}}},
		{"snapshot/state", 0, 0o444, []part{{0, text(3 << 19)}}},
		{"snapshot/empty", 0, 0o644, nil},
		{"snapshot/mem", memSize, 0o600, []part{
			{0, random(4096)}, {1 << 20, random(8192)}, {min(64<<20, memSize/2) - 4096, random(8192)},
			{memSize/2 + 12345, random(4096)}, {memSize - 4096, random(4096)},
		}},
	}
	var in []Input
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for _, pt := range f.data {
			if _, err := fh.WriteAt(pt.data, pt.off); err != nil {
				t.Fatal(err)
			}
		}
		if f.size > 0 {
			if err := fh.Truncate(f.size); err != nil {
				t.Fatal(err)
			}
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.perm); err != nil {
			t.Fatal(err)
		}
		in = append(in, Input{Name: f.name, Path: p})
	}
	return in
}

func fileSum(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func allocated(t testing.TB, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// sparseSupported reports whether dir's filesystem keeps holes.
func sparseSupported(t testing.TB, dir string) bool {
	p := filepath.Join(dir, ".sparse-probe")
	defer os.Remove(p)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	return allocated(t, p) < 1<<20
}

func pack(t testing.TB, in []Input, opts PackOptions) *Packed {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	p, err := Pack(context.Background(), in, opts)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func push(t testing.TB, s registry.Store, tag string, p *Packed) registry.Descriptor {
	t.Helper()
	d, err := Push(context.Background(), s, tag, p, PushOptions{})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	return d
}

// assertSame checks that every input arrived intact, with its mode.
func assertSame(t *testing.T, in []Input, dst string, cfg *Config) {
	t.Helper()
	for _, i := range in {
		p := filepath.Join(dst, filepath.FromSlash(i.Name))
		if got, want := fileSum(t, p), fileSum(t, i.Path); got != want {
			t.Errorf("%s: pulled sha256 %s, want %s", i.Name, got, want)
		}
		src, err := os.Stat(i.Path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Size() != src.Size() {
			t.Errorf("%s: size %d, want %d", i.Name, got.Size(), src.Size())
		}
		if got.Mode().Perm() != modeOf(src.Mode().Perm()) {
			t.Errorf("%s: mode %v, want %v", i.Name, got.Mode().Perm(), modeOf(src.Mode().Perm()))
		}
	}
	if len(cfg.Files) != len(in) {
		t.Errorf("config lists %d files, want %d", len(cfg.Files), len(in))
	}
}

// assertNothingAt checks a failed pull left no trace at dst or beside it.
func assertNothingAt(t *testing.T, dst string) {
	t.Helper()
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists after a failed pull (%v)", dst, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(dst))
	for _, e := range ents {
		if strings.Contains(e.Name(), ".pull-") {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

// cacheFiles lists the blob cache's files (locks aside).
func cacheFiles(t *testing.T, blobDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(blobDir, "sha256"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	in := makeTemplate(t, src, bigMem)
	for _, tc := range []struct {
		name      string
		chunkSize int64
		minChunks int // chunks of snapshot/mem
	}{
		{"default chunks", 0, bigMem / DefaultChunkSize},
		{"1MiB chunks", 1 << 20, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var packed []Progress
			p := pack(t, in, PackOptions{
				ChunkSize: tc.chunkSize,
				Template:  json.RawMessage(`{ "name": "web",  "cpus": 2 }`),
				Name:      "web",
				Progress:  func(pr Progress) { packed = append(packed, pr) },
			})
			if last := packed[len(packed)-1]; last.Done != last.Total || last.Phase != PhasePack {
				t.Errorf("last pack progress %+v, want done == total", last)
			}
			for _, f := range p.Config.Files {
				if f.Name == "snapshot/mem" && len(f.Chunks) != tc.minChunks {
					t.Errorf("snapshot/mem has %d chunks, want %d", len(f.Chunks), tc.minChunks)
				}
			}
			s := newMemStore()
			d := push(t, s, "v1", p)
			if d != p.ManifestDesc {
				t.Errorf("Push returned %+v, want %+v", d, p.ManifestDesc)
			}

			for _, ref := range []string{"v1", d.Digest} {
				dst := filepath.Join(t.TempDir(), "tpl")
				var last Progress
				res, err := Pull(context.Background(), s, ref, dst, PullOptions{
					BlobDir:  filepath.Join(t.TempDir(), "blobs"),
					Progress: func(pr Progress) { last = pr },
				})
				if err != nil {
					t.Fatalf("Pull %s: %v", ref, err)
				}
				if res.Manifest.Digest != d.Digest || res.Dir != dst {
					t.Errorf("Pull returned %+v", res)
				}
				if string(res.Config.Template) != `{"name":"web","cpus":2}` {
					t.Errorf("template metadata %s", res.Config.Template)
				}
				if last.Phase != PhaseAssemble || last.Done != last.Total {
					t.Errorf("last pull progress %+v", last)
				}
				assertSame(t, in, dst, res.Config)
				if sparseSupported(t, dst) {
					if a := allocated(t, filepath.Join(dst, "snapshot/mem")); a > 1<<20 {
						t.Errorf("pulled snapshot/mem allocates %d bytes, want it sparse", a)
					}
				}
			}
		})
	}
}

func TestManifestShape(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{Name: "web"})
	var m map[string]any
	if err := json.Unmarshal(p.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m["mediaType"] != registry.ManifestMediaType || m["artifactType"] != registry.ArtifactType || m["schemaVersion"] != 2.0 {
		t.Errorf("manifest header %v %v %v", m["mediaType"], m["artifactType"], m["schemaVersion"])
	}
	dm, err := DecodeManifest(p.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	media := map[string]string{}
	for _, l := range dm.Layers {
		media[l.Annotations[AnnotationTitle]] = l.MediaType
	}
	for _, tc := range []struct{ title, media string }{
		{"config.json.0000", registry.LayerMediaType},               // small: raw
		{"image/vmlinuz.0000", registry.LayerMediaType},             // random: compression does not pay
		{"image/rootfs.ext4.0000.zst", registry.LayerZstdMediaType}, // compressible
		{"snapshot/mem.0000.zst", registry.LayerZstdMediaType},
	} {
		if media[tc.title] != tc.media {
			t.Errorf("layer %s: media type %q, want %q (layers: %v)", tc.title, media[tc.title], tc.media, media)
		}
	}
	if dm.Annotations[AnnotationTemplate] != "web" {
		t.Errorf("annotations %v", dm.Annotations)
	}
	for _, b := range p.Blobs {
		if b.Size > DefaultChunkSize {
			t.Errorf("blob %s is %d bytes, more than a chunk", b.Digest, b.Size)
		}
	}
}

// TestDeterministic: the same files give the same digests, whether or not
// the source is sparse, so a second push finds everything in place.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewChaCha8([32]byte{2}))
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sparse := filepath.Join(dir, "sparse")
	dense := filepath.Join(dir, "dense")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	full := make([]byte, 8<<20)
	copy(full[3<<20:], data)
	if err := os.WriteFile(dense, full, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sparse, 0o600); err != nil {
		t.Fatal(err)
	}

	opts := PackOptions{ChunkSize: 1 << 20, Template: json.RawMessage(`{"a":1}`)}
	a := pack(t, []Input{{Name: "mem", Path: sparse}}, opts)
	b := pack(t, []Input{{Name: "mem", Path: sparse}}, opts)
	c := pack(t, []Input{{Name: "mem", Path: dense}}, opts)
	for _, o := range []*Packed{b, c} {
		if o.ManifestDesc != a.ManifestDesc || o.ConfigDesc != a.ConfigDesc {
			t.Errorf("digests differ between packs: %s/%s vs %s/%s", o.ManifestDesc.Digest, o.ConfigDesc.Digest, a.ManifestDesc.Digest, a.ConfigDesc.Digest)
		}
		if !bytes.Equal(o.Manifest, a.Manifest) {
			t.Errorf("manifests differ")
		}
	}
	if len(a.Blobs) != 2 {
		t.Errorf("%d distinct blobs, want 2 (the zero chunk and the one with data)", len(a.Blobs))
	}
}

func TestPushTwiceSendsNothing(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	s := newMemStore()
	p := pack(t, in, PackOptions{})
	d1 := push(t, s, "v1", p)
	puts := s.puts()
	if puts != len(p.Blobs)+1 {
		t.Errorf("first push: %d uploads, want %d", puts, len(p.Blobs)+1)
	}
	var last Progress
	p2 := pack(t, in, PackOptions{})
	d2, err := Push(context.Background(), s, "v2", p2, PushOptions{Progress: func(pr Progress) { last = pr }})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.puts() - puts; n != 0 {
		t.Errorf("second push uploaded %d blobs, want 0", n)
	}
	if d1 != d2 {
		t.Errorf("manifest digests %s and %s differ", d1.Digest, d2.Digest)
	}
	if last.Done != last.Total || last.Phase != PhaseUpload {
		t.Errorf("last progress %+v", last)
	}
}

// republish stores a changed config and a manifest naming it under tag,
// the way an attacker with write access to the store could.
func republish(t *testing.T, s *spyStore, p *Packed, tag string, edit func(*Config, *Manifest)) {
	t.Helper()
	var c Config
	var m Manifest
	if err := json.Unmarshal(p.ConfigBytes, &c); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(p.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	edit(&c, &m)
	cb, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	cd := registry.Descriptor{MediaType: registry.ConfigMediaType, Digest: digestOf(cb), Size: int64(len(cb))}
	if err := s.PutBlob(context.Background(), cd, bytes.NewReader(cb)); err != nil {
		t.Fatal(err)
	}
	m.Config.Digest, m.Config.Size = cd.Digest, cd.Size
	mb, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(context.Background(), tag, registry.ManifestMediaType, mb); err != nil {
		t.Fatal(err)
	}
}

func TestTamperRefused(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{ChunkSize: 1 << 20})
	var rootfsLayer registry.Descriptor // a compressed layer of the rootfs
	var kernelLayer registry.Descriptor // a raw one
	for _, f := range p.Config.Files {
		for _, c := range f.Chunks {
			for _, b := range p.Blobs {
				if b.Digest != c.Digest {
					continue
				}
				if f.Name == "image/rootfs.ext4" && c.Index == 0 {
					rootfsLayer = b
				}
				if f.Name == "image/vmlinuz" && c.Index == 1 {
					kernelLayer = b
				}
			}
		}
	}
	flip := func(s *spyStore, d registry.Descriptor, at int64) {
		b := s.blob(d)
		b[at] ^= 0x40
		s.serveBlob(d.Digest, b)
	}
	for _, tc := range []struct {
		name    string
		ref     string
		tamper  func(s *spyStore)
		want    error
		badBlob string // must not stay in the blob cache
	}{
		{"compressed layer byte", "v1", func(s *spyStore) { flip(s, rootfsLayer, rootfsLayer.Size/2) }, ErrDigest, rootfsLayer.Digest},
		{"raw layer byte", "v1", func(s *spyStore) { flip(s, kernelLayer, 10) }, ErrDigest, kernelLayer.Digest},
		{"config blob byte", "v1", func(s *spyStore) {
			b := bytes.Clone(p.ConfigBytes)
			b[bytes.Index(b, []byte(`"size":`))+7] ^= 1
			s.serveBlob(p.ConfigDesc.Digest, b)
		}, ErrDigest, ""},
		{"manifest bytes under its digest", p.ManifestDesc.Digest, func(s *spyStore) {
			s.serveManifest(p.ManifestDesc.Digest, bytes.Replace(p.Manifest, []byte("snapshot/mem.0001"), []byte("snapshot/mem.0002"), 1))
		}, ErrDigest, ""},
		{"manifest layer digest", "v1", func(s *spyStore) {
			republish(t, s, p, "v1", func(_ *Config, m *Manifest) { m.Layers[0].Digest = kernelLayer.Digest })
		}, ErrInvalid, ""},
		{"file hash in config", "v1", func(s *spyStore) {
			republish(t, s, p, "v1", func(c *Config, _ *Manifest) {
				c.Files[0].SHA256 = strings.Repeat("0", 64)
			})
		}, ErrDigest, ""},
		{"file size in config", "v1", func(s *spyStore) {
			republish(t, s, p, "v1", func(c *Config, _ *Manifest) {
				c.Files[0].Size++
			})
		}, ErrInvalid, ""},
		{"path traversal name", "v1", func(s *spyStore) {
			republish(t, s, p, "v1", func(c *Config, m *Manifest) {
				c.Files[0].Name = "../evil"
				m.Layers[0].Annotations[AnnotationFile] = "../evil"
			})
		}, ErrInvalid, ""},
		{"executable mode", "v1", func(s *spyStore) {
			republish(t, s, p, "v1", func(c *Config, _ *Manifest) { c.Files[0].Mode = 0o4755 })
		}, ErrInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			push(t, s, "v1", p)
			tc.tamper(s)
			dst := filepath.Join(t.TempDir(), "tpl")
			blobs := filepath.Join(t.TempDir(), "blobs")
			_, err := Pull(context.Background(), s, tc.ref, dst, PullOptions{BlobDir: blobs})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Pull: %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			assertNothingAt(t, dst)
			if tc.badBlob != "" {
				h := strings.TrimPrefix(tc.badBlob, "sha256:")
				for _, f := range cacheFiles(t, blobs) {
					if strings.HasPrefix(f, h) {
						t.Errorf("bad blob kept in the cache as %s", f)
					}
				}
			}
		})
	}
}

// TestCorruptCacheRefused: a blob corrupted in the cache after download is
// caught as it is read back, and evicted.
func TestCorruptCacheRefused(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{})
	s := newMemStore()
	push(t, s, "v1", p)
	blobs := filepath.Join(t.TempDir(), "blobs")
	if _, err := Pull(context.Background(), s, "v1", filepath.Join(t.TempDir(), "a"), PullOptions{BlobDir: blobs}); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(blobs, "sha256", strings.TrimPrefix(p.Blobs[len(p.Blobs)/2].Digest, "sha256:"))
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "b")
	if _, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs}); !errors.Is(err, ErrDigest) {
		t.Fatalf("Pull with a corrupt cache: %v, want ErrDigest", err)
	}
	assertNothingAt(t, dst)
	if _, err := os.Stat(victim); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt blob still cached (%v)", err)
	}
	if _, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs}); err != nil {
		t.Fatalf("Pull after eviction: %v", err)
	}
	assertSame(t, in, dst, &p.Config)
}

func TestResumeInterruptedPull(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{Concurrency: 1})
	s := newMemStore()
	push(t, s, "v1", p)
	blobs := filepath.Join(t.TempDir(), "blobs")
	dst := filepath.Join(t.TempDir(), "tpl")

	// The kernel is one raw 3 MiB blob; cut the connection inside it (after
	// the config, which is read first).
	flaky := &failAfter{Store: s, budget: p.ConfigDesc.Size + 2<<20}
	_, err := Pull(context.Background(), flaky, "v1", dst, PullOptions{BlobDir: blobs, Concurrency: 1})
	if !errors.Is(err, errInjected) {
		t.Fatalf("interrupted Pull: %v, want the injected failure", err)
	}
	assertNothingAt(t, dst)
	var partial []string
	for _, f := range cacheFiles(t, blobs) {
		if strings.HasSuffix(f, ".partial") {
			partial = append(partial, f)
		}
	}
	if len(partial) == 0 {
		t.Fatalf("no .partial left to resume (cache: %v)", cacheFiles(t, blobs))
	}

	s.resetReads()
	if _, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs}); err != nil {
		t.Fatalf("resumed Pull: %v", err)
	}
	_, offsets := s.reads()
	resumed := false
	for _, o := range offsets {
		resumed = resumed || o > 0
	}
	if !resumed {
		t.Errorf("second pull asked for offsets %v, want one > 0", offsets)
	}
	assertSame(t, in, dst, &p.Config)
	for _, f := range cacheFiles(t, blobs) {
		if strings.HasSuffix(f, ".partial") {
			t.Errorf("%s left after a complete pull", f)
		}
	}
}

func TestConcurrentPulls(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{ChunkSize: 4 << 20})
	s := newMemStore()
	push(t, s, "v1", p)
	for _, tc := range []struct {
		name    string
		sameDst bool
	}{
		{"same destination", true},
		{"same blob cache only", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobs := filepath.Join(t.TempDir(), "blobs")
			root := t.TempDir()
			errs := make([]error, 2)
			dsts := []string{filepath.Join(root, "a"), filepath.Join(root, "b")}
			if tc.sameDst {
				dsts[1] = dsts[0]
			}
			var wg sync.WaitGroup
			for i := range 2 {
				wg.Go(func() {
					_, errs[i] = Pull(context.Background(), s, "v1", dsts[i], PullOptions{BlobDir: blobs})
				})
			}
			wg.Wait()
			if tc.sameDst {
				ok, exist := 0, 0
				for _, err := range errs {
					switch {
					case err == nil:
						ok++
					case errors.Is(err, fs.ErrExist):
						exist++
					default:
						t.Errorf("Pull: %v", err)
					}
				}
				if ok != 1 || exist != 1 {
					t.Errorf("%d pulls succeeded and %d found it done, want 1 and 1 (%v)", ok, exist, errs)
				}
				assertSame(t, in, dsts[0], &p.Config)
				return
			}
			for i, err := range errs {
				if err != nil {
					t.Fatalf("Pull %d: %v", i, err)
				}
				assertSame(t, in, dsts[i], &p.Config)
			}
		})
	}
}

func TestVerifyHookRefuses(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{})
	s := newMemStore()
	d := push(t, s, "v1", p)
	s.resetReads()
	blobs := filepath.Join(t.TempDir(), "blobs")
	dst := filepath.Join(t.TempDir(), "tpl")
	errUnsigned := errors.New("no valid signature")
	var saw string
	_, err := Pull(context.Background(), s, "v1", dst, PullOptions{
		BlobDir: blobs,
		Verify: func(digest string, manifest []byte) error {
			saw = digest
			if digestOf(manifest) != digest {
				t.Errorf("hook got bytes of digest %s, told %s", digestOf(manifest), digest)
			}
			return errUnsigned
		},
	})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, errUnsigned) {
		t.Fatalf("Pull: %v, want ErrRefused wrapping the hook's error", err)
	}
	if saw != d.Digest {
		t.Errorf("hook saw %s, want %s", saw, d.Digest)
	}
	assertNothingAt(t, dst)
	if gets, _ := s.reads(); gets != 0 {
		t.Errorf("%d blobs read after the hook refused", gets)
	}
	if f := cacheFiles(t, blobs); len(f) != 0 {
		t.Errorf("blob cache holds %v after the hook refused", f)
	}

	// And accepting lets it through.
	if _, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: blobs, Verify: func(string, []byte) error { return nil }}); err != nil {
		t.Fatal(err)
	}
}

func TestPullRefusesExistingDestination(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{})
	s := newMemStore()
	push(t, s, "v1", p)
	dst := t.TempDir() // exists, empty
	_, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: filepath.Join(t.TempDir(), "b")})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Pull into an existing directory: %v, want ErrExist", err)
	}
}

func TestPackRefuses(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []Input
		opts PackOptions
	}{
		{"no files", nil, PackOptions{}},
		{"dot dot", []Input{{Name: "../f", Path: f}}, PackOptions{}},
		{"duplicate", []Input{{Name: "f", Path: f}, {Name: "f", Path: f}}, PackOptions{}},
		{"file and directory", []Input{{Name: "a", Path: f}, {Name: "a/b", Path: f}}, PackOptions{}},
		{"directory input", []Input{{Name: "d", Path: dir}}, PackOptions{}},
		{"missing input", []Input{{Name: "m", Path: filepath.Join(dir, "missing")}}, PackOptions{}},
		{"bad mode", []Input{{Name: "f", Path: f, Mode: 0o755}}, PackOptions{}},
		{"tiny chunks", []Input{{Name: "f", Path: f}}, PackOptions{ChunkSize: 512}},
		{"bad template", []Input{{Name: "f", Path: f}}, PackOptions{Template: json.RawMessage(`{`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TempDir = t.TempDir()
			if p, err := Pack(context.Background(), tc.in, tc.opts); err == nil {
				p.Close()
				t.Fatal("Pack succeeded")
			}
			if ents, _ := os.ReadDir(tc.opts.TempDir); len(ents) != 0 {
				t.Errorf("spool left behind: %v", ents)
			}
		})
	}
}

func TestPushPullRefuseBadRefs(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	p := pack(t, in, PackOptions{})
	s := newMemStore()
	for _, tag := range []string{"", "-x", "a/b", "sha256:abc", strings.Repeat("a", 129)} {
		if _, err := Push(context.Background(), s, tag, p, PushOptions{}); err == nil {
			t.Errorf("Push to tag %q succeeded", tag)
		}
		if _, err := Pull(context.Background(), s, tag, filepath.Join(t.TempDir(), "d"), PullOptions{BlobDir: t.TempDir()}); err == nil {
			t.Errorf("Pull of %q succeeded", tag)
		}
	}
}

func TestSparseWriter(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{3}))
	for _, tc := range []struct {
		name   string
		size   int
		data   [][2]int // [offset, length] of non-zero runs
		writes int      // write size
	}{
		{"all zero", 64 << 10, nil, 4096},
		{"aligned data", 64 << 10, [][2]int{{8192, 4096}}, 4096},
		{"unaligned data, odd writes", 64 << 10, [][2]int{{5000, 3}, {20000, 9000}}, 777},
		{"data at the end", 40000, [][2]int{{39990, 10}}, 1 << 20},
		{"one big write", 1 << 20, [][2]int{{0, 1}, {500000, 70000}}, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := make([]byte, tc.size)
			for _, d := range tc.data {
				for i := d[0]; i < d[0]+d[1]; i++ {
					want[i] = byte(rng.Uint32()) | 1
				}
			}
			p := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			w := &sparseWriter{f: f}
			for off := 0; off < len(want); off += tc.writes {
				if _, err := w.Write(want[off:min(len(want), off+tc.writes)]); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(int64(tc.size)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) || w.off != int64(tc.size) {
				t.Errorf("content differs (offset %d)", w.off)
			}
			if tc.data == nil && sparseSupported(t, filepath.Dir(p)) && allocated(t, p) != 0 {
				t.Errorf("all-zero file allocates %d bytes", allocated(t, p))
			}
		})
	}
}

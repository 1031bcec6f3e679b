package artifact

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// trustFreshFiles lets files written by the test itself be memoized: the
// racy-timestamp margin would otherwise keep every one of them out.
func trustFreshFiles(t *testing.T) {
	t.Helper()
	old := memoRacyWindow
	memoRacyWindow = 0
	t.Cleanup(func() { memoRacyWindow = old })
}

func skipWithoutStatID(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := statID(fi); !ok {
		t.Skip("no inode and ctime here, so no pack memo")
	}
}

// packWithMemo packs in into blobs with memo and returns the result and
// its memo.
func packWithMemo(t *testing.T, in []Input, blobs string, memo []byte, opts PackOptions) (*Packed, []byte) {
	t.Helper()
	opts.BlobDir, opts.Memo = blobs, memo
	p := pack(t, in, opts)
	m, err := p.MarshalMemo()
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

func inputNames(in []Input) []string {
	var out []string
	for _, i := range in {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

func TestPackMemo(t *testing.T) {
	trustFreshFiles(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, in []Input, blobs string, first *Packed)
		repack []string // files the second pack must read
		opts   PackOptions
	}{
		{"unchanged", func(*testing.T, []Input, string, *Packed) {}, nil, PackOptions{}},
		{"touched file", func(t *testing.T, in []Input, _ string, _ *Packed) {
			// Into the past: a future mtime would (rightly) keep the file
			// out of the next memo.
			touched := time.Now().Add(-time.Minute)
			if err := os.Chtimes(in[3].Path, touched, touched); err != nil {
				t.Fatal(err)
			}
		}, []string{"snapshot/state"}, PackOptions{}},
		{"rewritten, mtime put back", func(t *testing.T, in []Input, _ string, _ *Packed) {
			p := in[1].Path // image/vmlinuz, raw
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // let the coarse clock tick for ctime
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[100] ^= 0xff
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}, []string{"image/vmlinuz"}, PackOptions{}},
		{"replaced by another file", func(t *testing.T, in []Input, _ string, _ *Packed) {
			p := in[0].Path // config.json
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			tmp := p + ".new"
			if err := os.WriteFile(tmp, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, p); err != nil {
				t.Fatal(err)
			}
		}, []string{"config.json"}, PackOptions{}},
		{"missing blob", func(t *testing.T, _ []Input, blobs string, first *Packed) {
			var victim string
			for _, f := range first.Config.Files {
				if f.Name == "image/rootfs.ext4" {
					victim = f.Chunks[0].Digest
				}
			}
			if err := os.Remove(filepath.Join(blobs, "sha256", strings.TrimPrefix(victim, "sha256:"))); err != nil {
				t.Fatal(err)
			}
		}, []string{"image/rootfs.ext4"}, PackOptions{}},
		{"truncated blob", func(t *testing.T, _ []Input, blobs string, first *Packed) {
			var victim string
			for _, f := range first.Config.Files {
				if f.Name == "snapshot/state" {
					victim = f.Chunks[0].Digest
				}
			}
			if err := os.Truncate(filepath.Join(blobs, "sha256", strings.TrimPrefix(victim, "sha256:")), 10); err != nil {
				t.Fatal(err)
			}
		}, []string{"snapshot/state"}, PackOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := makeTemplate(t, t.TempDir(), smallMem)
			skipWithoutStatID(t, in[0].Path)
			blobs := filepath.Join(t.TempDir(), "blobs")
			first, memo := packWithMemo(t, in, blobs, nil, tc.opts)
			if len(first.Reused) != 0 {
				t.Fatalf("first pack reused %v", first.Reused)
			}
			tc.change(t, in, blobs, first)

			second, memo2 := packWithMemo(t, in, blobs, memo, tc.opts)
			var want []string
			for _, n := range inputNames(in) {
				if !slices.Contains(tc.repack, n) {
					want = append(want, n)
				}
			}
			if !slices.Equal(second.Reused, want) {
				t.Errorf("reused %v, want %v", second.Reused, want)
			}

			// Whatever was reused, the artifact is the one a fresh pack
			// of the files as they are now gives.
			fresh := pack(t, in, tc.opts)
			if second.ManifestDesc != fresh.ManifestDesc || string(second.ConfigBytes) != string(fresh.ConfigBytes) {
				t.Errorf("memo pack gives manifest %s, a fresh pack %s", second.ManifestDesc.Digest, fresh.ManifestDesc.Digest)
			}
			for _, b := range second.Blobs {
				f, err := second.OpenBlob(b.Digest)
				if err != nil {
					t.Errorf("blob %s of the memo pack: %v", b.Digest, err)
					continue
				}
				f.Close()
			}

			// And the memo it leaves lets a third pack read nothing.
			third, _ := packWithMemo(t, in, blobs, memo2, tc.opts)
			if !slices.Equal(third.Reused, inputNames(in)) {
				t.Errorf("third pack reused %v, want everything", third.Reused)
			}
		})
	}
}

// TestPackMemoRefusesMismatch: a memo that does not fit the pack at hand
// (other chunk size, garbage) is ignored, never an error.
func TestPackMemoRefusesMismatch(t *testing.T) {
	trustFreshFiles(t)
	in := makeTemplate(t, t.TempDir(), smallMem)
	skipWithoutStatID(t, in[0].Path)
	blobs := filepath.Join(t.TempDir(), "blobs")
	_, memo := packWithMemo(t, in, blobs, nil, PackOptions{})
	for _, tc := range []struct {
		name string
		memo []byte
		opts PackOptions
	}{
		{"other chunk size", memo, PackOptions{ChunkSize: 1 << 20}},
		{"other compression threshold", memo, PackOptions{CompressMin: -1}},
		{"garbage", []byte("{not json"), PackOptions{}},
		{"other version", []byte(strings.Replace(string(memo), `"version":1`, `"version":99`, 1)), PackOptions{}},
		{"renamed file", []byte(strings.ReplaceAll(string(memo), `"name":"snapshot/state"`, `"name":"snapshot/other"`)), PackOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := packWithMemo(t, in, blobs, tc.memo, tc.opts)
			for _, n := range p.Reused {
				if tc.name != "renamed file" || n == "snapshot/state" {
					t.Errorf("reused %s from a memo that does not fit", n)
				}
			}
			fresh := pack(t, in, tc.opts)
			if p.ManifestDesc != fresh.ManifestDesc {
				t.Errorf("manifest %s, fresh pack %s", p.ManifestDesc.Digest, fresh.ManifestDesc.Digest)
			}
		})
	}
}

// TestPackMemoSkipsRecentFiles: a file changed just before it was packed
// could change again within the same timestamp tick, so it is not
// memoized.
func TestPackMemoSkipsRecentFiles(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	skipWithoutStatID(t, in[0].Path)
	blobs := filepath.Join(t.TempDir(), "blobs")
	_, memo := packWithMemo(t, in, blobs, nil, PackOptions{})
	p, _ := packWithMemo(t, in, blobs, memo, PackOptions{})
	if len(p.Reused) != 0 {
		t.Errorf("reused files written a moment ago: %v", p.Reused)
	}
}

func TestSpoolHasNoMemo(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	if _, err := pack(t, in, PackOptions{}).MarshalMemo(); err == nil {
		t.Error("MarshalMemo of a spooled pack succeeded")
	}
}

// TestPackIntoBlobCache: a pack into a blob cache leaves nothing but blobs
// (and their locks) behind, its Close keeps them, and a pull sharing the
// cache, concurrently too, uses them.
func TestPackIntoBlobCache(t *testing.T) {
	in := makeTemplate(t, t.TempDir(), smallMem)
	blobs := filepath.Join(t.TempDir(), "blobs")
	p := pack(t, in, PackOptions{BlobDir: blobs, ChunkSize: 1 << 20})
	s := newMemStore()
	push(t, s, "v1", p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Blobs {
		if !cached(filepath.Join(blobs, "sha256", strings.TrimPrefix(b.Digest, "sha256:")), b.Size) {
			t.Errorf("blob %s not in the cache after Close", b.Digest)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(blobs, "tmp")); len(ents) != 0 {
		t.Errorf("temp files left: %v", ents)
	}
	if got, want := len(cacheFiles(t, blobs)), len(p.Blobs); got != want {
		t.Errorf("cache holds %d files, want the %d blobs", got, want)
	}

	// Pulls from the cache the pack filled while packs write into it.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	dsts := make([]string, 2)
	for i := range 2 {
		dsts[i] = filepath.Join(t.TempDir(), "tpl")
		wg.Go(func() {
			_, errs[i] = Pull(context.Background(), s, "v1", dsts[i], PullOptions{BlobDir: blobs})
		})
		wg.Go(func() {
			q, err := Pack(context.Background(), in, PackOptions{BlobDir: blobs, ChunkSize: 1 << 20})
			if err == nil {
				if q.ManifestDesc != p.ManifestDesc {
					err = errors.New("another manifest: " + q.ManifestDesc.Digest)
				}
				q.Close()
			}
			errs[2+i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("job %d: %v", i, err)
		}
	}
	for _, d := range dsts {
		assertSame(t, in, d, &p.Config)
	}
	if gets, _ := s.reads(); gets != 2 {
		t.Errorf("%d blob reads from the store, want 2 (a config per pull): all layers were cached", gets)
	}
}

// TestPushEvictsCorruptCachedBlob: a memo points at cached blobs without
// hashing them; one damaged in the cache is caught as it is uploaded,
// removed, and the next pack makes it again.
func TestPushEvictsCorruptCachedBlob(t *testing.T) {
	trustFreshFiles(t)
	in := makeTemplate(t, t.TempDir(), smallMem)
	skipWithoutStatID(t, in[0].Path)
	blobs := filepath.Join(t.TempDir(), "blobs")
	first, memo := packWithMemo(t, in, blobs, nil, PackOptions{})
	victim := first.Blobs[len(first.Blobs)/2]
	vp := filepath.Join(blobs, "sha256", strings.TrimPrefix(victim.Digest, "sha256:"))
	b, err := os.ReadFile(vp)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(vp, b, 0o600); err != nil {
		t.Fatal(err)
	}

	second, _ := packWithMemo(t, in, blobs, memo, PackOptions{})
	if len(second.Reused) != len(in) {
		t.Fatalf("reused %v, want everything (same size, so the memo trusts it)", second.Reused)
	}
	s := newMemStore()
	if _, err := Push(context.Background(), s, "v1", second, PushOptions{}); !errors.Is(err, ErrDigest) {
		t.Fatalf("Push of a corrupt cached blob: %v, want ErrDigest", err)
	}
	if _, err := os.Stat(vp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt blob still cached (%v)", err)
	}

	third, _ := packWithMemo(t, in, blobs, memo, PackOptions{})
	if len(third.Reused) != len(in)-1 {
		t.Errorf("reused %v, want all but the file of the evicted blob", third.Reused)
	}
	push(t, s, "v1", third)
	dst := filepath.Join(t.TempDir(), "tpl")
	res, err := Pull(context.Background(), s, "v1", dst, PullOptions{BlobDir: filepath.Join(t.TempDir(), "b")})
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, in, dst, res.Config)
}

// BenchmarkSnapshotPackMemo is a second pack of the unchanged
// snapshot-shaped template, with the memo of the first: what a second
// push costs before uploading. MB/s counts the files' apparent size.
func BenchmarkSnapshotPackMemo(b *testing.B) {
	old := memoRacyWindow
	memoRacyWindow = 0
	b.Cleanup(func() { memoRacyWindow = old })
	in := makeSnapshotTemplate(b, b.TempDir())
	blobs := filepath.Join(b.TempDir(), "blobs")
	ctx := context.Background()
	p, err := Pack(ctx, in, PackOptions{BlobDir: blobs})
	if err != nil {
		b.Fatal(err)
	}
	memo, err := p.MarshalMemo()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(inputSize(b, in))
	for b.Loop() {
		q, err := Pack(ctx, in, PackOptions{BlobDir: blobs, Memo: memo})
		if err != nil {
			b.Fatal(err)
		}
		if len(q.Reused) != len(in) {
			b.Fatalf("reused %d of %d files", len(q.Reused), len(in))
		}
		q.Close()
	}
}

// FuzzLoadMemo: a memo is read back from the template directory, so any
// bytes there must give either nothing or entries Pack can check safely.
func FuzzLoadMemo(f *testing.F) {
	dir := f.TempDir()
	p := filepath.Join(dir, "a")
	if err := os.WriteFile(p, []byte("some bytes to pack"), 0o644); err != nil {
		f.Fatal(err)
	}
	old := memoRacyWindow
	memoRacyWindow = 0
	packed, err := Pack(context.Background(), []Input{{Name: "a", Path: p}}, PackOptions{BlobDir: filepath.Join(dir, "blobs")})
	memoRacyWindow = old
	if err != nil {
		f.Fatal(err)
	}
	seed, err := packed.MarshalMemo()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":1,"files":[{"name":"a","file":{"chunks":[{}]}}]}`))
	f.Add([]byte("{"))
	opts := PackOptions{ChunkSize: DefaultChunkSize, CompressMin: DefaultCompressMin}
	if len(loadMemo(seed, &opts)) != 1 {
		f.Fatal("the seed memo does not load")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		prior := loadMemo(b, &opts)
		pk := &packer{opts: &opts, prior: prior, blobs: filepath.Join(dir, "blobs", "sha256")}
		for name, mf := range prior {
			if name != mf.Name {
				t.Fatalf("entry %q filed under %q", mf.Name, name)
			}
			if pf, ok := pk.reuse(Input{Name: name, Path: mf.Path, Mode: mf.InputMode}); ok {
				if err := pf.file.validate(); err != nil {
					t.Fatalf("reused an invalid entry: %v", err)
				}
				if len(pf.layers) != len(pf.file.Chunks) {
					t.Fatalf("%d layers for %d chunks", len(pf.layers), len(pf.file.Chunks))
				}
			}
		}
	})
}

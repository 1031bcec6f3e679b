package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// fakeEntry writes a complete-looking cache entry and returns its hex digest.
func fakeEntry(t *testing.T, cache, name string, complete bool, inputs ...Input) string {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	d := hex.EncodeToString(sum[:])
	dir := filepath.Join(cache, d)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{kernelFile, initrdFile, rootfsFile} {
		if err := os.WriteFile(filepath.Join(dir, f), make([]byte, 8192), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if complete {
		m := manifest{Name: name, Digest: "sha256:" + d, Kernel: kernelFile, Initrd: initrdFile, Rootfs: rootfsFile, Inputs: inputs}
		b, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(dir, manifestFile), b, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cache, d+".lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestInspectAndPruneCache(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "images")
	linked := fakeEntry(t, cache, "linked", true)
	linkByName(cache, "linked", linked)
	orphan := fakeEntry(t, cache, "orphan", true)
	inUse := fakeEntry(t, cache, "in-use", true)
	broken := fakeEntry(t, cache, "broken", false)
	// A lock whose entry is gone, a fresh temp dir (build in progress) and
	// an old one (crash).
	gone := hex.EncodeToString(make([]byte, 32))
	mustWrite(t, filepath.Join(cache, gone+".lock"), "")
	mustWrite(t, filepath.Join(cache, ".tmp-fresh", "rootfs.ext4"), "x")
	mustWrite(t, filepath.Join(cache, ".tmp-old", "rootfs.ext4"), "x")
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{filepath.Join(cache, ".tmp-old", "rootfs.ext4"), filepath.Join(cache, ".tmp-old")} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	bs := filepath.Join(cache, bootstrapDir)
	mustWrite(t, filepath.Join(bs, "k.tar"), "tar")
	mustWrite(t, filepath.Join(bs, "k.json"), `{"suite":"bookworm","packages":["python3"],"sha256":"`+linked+`"}`)

	info, err := InspectCache(cache)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, k := range info.Kinds {
		kinds[k.Kind] = k.Count
	}
	want := map[string]int{KindImage: 3, KindIncomplete: 1, KindTemp: 2, KindLock: 1, KindBootstrap: 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s: %d items, want %d (%+v)", k, kinds[k], n, info.Kinds)
		}
	}
	if info.TotalBytes <= 0 {
		t.Error("no sizes")
	}

	dry, err := PruneCache(cache, PruneOptions{DryRun: true, Keep: []string{"sha256:" + inUse}})
	if err != nil {
		t.Fatal(err)
	}
	if got := removedNames(dry); !equal(got, []string{".tmp-old", broken, gone + ".lock", orphan}) {
		t.Errorf("dry run would remove %v", got)
	}
	if _, err := os.Stat(filepath.Join(cache, orphan)); err != nil {
		t.Fatal("dry run removed something")
	}

	res, err := PruneCache(cache, PruneOptions{Keep: []string{inUse}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed()) != 4 || res.Bytes <= 0 {
		t.Errorf("removed %+v", res)
	}
	for _, gone := range []string{orphan, broken, ".tmp-old", orphan + ".lock"} {
		if _, err := os.Lstat(filepath.Join(cache, gone)); err == nil {
			t.Errorf("%s still present", gone)
		}
	}
	for _, kept := range []string{linked, inUse, ".tmp-fresh", "bootstrap/k.tar"} {
		if _, err := os.Lstat(filepath.Join(cache, kept)); err != nil {
			t.Errorf("%s removed", kept)
		}
	}

	if _, err := PruneCache(cache, PruneOptions{All: true, Keep: []string{inUse}}); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{linked, "bootstrap/k.tar", "bootstrap/k.json", "by-name/linked"} {
		if _, err := os.Lstat(filepath.Join(cache, gone)); err == nil {
			t.Errorf("--all left %s", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(cache, inUse)); err != nil {
		t.Error("--all removed an image in use")
	}
}

func TestInspectMissingCache(t *testing.T) {
	info, err := InspectCache(filepath.Join(t.TempDir(), "nope"))
	if err != nil || len(info.Items) != 0 {
		t.Fatalf("%+v, %v", info, err)
	}
}

func removedNames(r *PruneResult) []string {
	var out []string
	for _, it := range r.Removed() {
		out = append(out, filepath.Base(it.Path))
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

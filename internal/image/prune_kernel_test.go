package image

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// kernelCache is a fake cache with images built from kernel packages:
//
//	a: linked, from debs/a.deb and kernels/<A>
//	b: not linked (pruned), from debs/b.deb and kernels/<B>
//	c: used by a VM, from a .deb outside the cache unpacked to kernels/<C>
//
// plus an orphan package and tree, a just-downloaded package, a broken
// tree and temp files, all old unless named fresh.
type kernelCache struct {
	dir              string
	imgA, imgB, imgC string // entry dir names (digest hex)
	treeA, treeB     string
	treeC, treeO     string
	broken           string
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func fakeKernelTree(t *testing.T, cache, sha string) string {
	t.Helper()
	dir := filepath.Join(cache, kernelsDir, sha)
	mustWrite(t, filepath.Join(dir, "boot", "vmlinuz-"+testRel), "kernel")
	mustWrite(t, filepath.Join(dir, "lib", "modules", testRel, "modules.dep"), "")
	return filepath.Join(kernelsDir, sha)
}

func newKernelCache(t *testing.T) *kernelCache {
	t.Helper()
	c := &kernelCache{dir: filepath.Join(t.TempDir(), "images")}
	shaA, shaB, shaC, shaO := sum("a.deb"), sum("b.deb"), sum("c.deb"), sum("o.deb")
	c.treeA, c.treeB = fakeKernelTree(t, c.dir, shaA), fakeKernelTree(t, c.dir, shaB)
	c.treeC, c.treeO = fakeKernelTree(t, c.dir, shaC), fakeKernelTree(t, c.dir, shaO)
	c.broken = filepath.Join(kernelsDir, sum("broken"))
	mustWrite(t, filepath.Join(c.dir, c.broken, "boot", "vmlinuz-"+testRel), "no modules")
	for _, n := range []string{"a", "b", "o", "fresh"} {
		mustWrite(t, filepath.Join(c.dir, debsDir, n+".deb"), n)
	}
	mustWrite(t, filepath.Join(c.dir, debsDir, ".lock"), "")
	mustWrite(t, filepath.Join(c.dir, debsDir, aptMemoFile), "{}")
	mustWrite(t, filepath.Join(c.dir, debsDir, ".dl-old", "x.deb"), "x")
	mustWrite(t, filepath.Join(c.dir, debsDir, ".dl-fresh", "x.deb"), "x")
	mustWrite(t, filepath.Join(c.dir, kernelsDir, ".tmp-old", "boot", "vmlinuz"), "x")

	abs := func(rel ...string) string { return filepath.Join(append([]string{c.dir}, rel...)...) }
	kin := func(deb, debSum, tree string) []Input {
		return []Input{
			{Role: "kernel-deb", Path: deb, SHA256: debSum},
			{Role: "kernel", Path: abs(tree, "boot", "vmlinuz-"+testRel), SHA256: sum("k")},
			{Role: "module:virtio", Path: abs(tree, "lib", "modules", testRel, "kernel", "virtio.ko"), SHA256: sum("m")},
			{Role: "agent", Path: "/usr/bin/mvm-agent", SHA256: sum("agent")},
		}
	}
	c.imgA = fakeEntry(t, c.dir, "a", true, kin(abs(debsDir, "a.deb"), shaA, c.treeA)...)
	linkByName(c.dir, "a", c.imgA)
	c.imgB = fakeEntry(t, c.dir, "b", true, kin(abs(debsDir, "b.deb"), shaB, c.treeB)...)
	// c's kernel-deb is the recipe's own file; only the tree is cached.
	c.imgC = fakeEntry(t, c.dir, "c", true, kin("/srv/c.deb", shaC, c.treeC)...)

	old := time.Now().Add(-time.Hour)
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || strings.Contains(p, "fresh") {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// present lists the cache's files and dirs that prune may touch.
func (c *kernelCache) present(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, glob := range []string{"[0-9a-f]*[0-9a-f]", debsDir + "/*", debsDir + "/.*", kernelsDir + "/*", kernelsDir + "/.*"} {
		ms, _ := filepath.Glob(filepath.Join(c.dir, glob))
		for _, m := range ms {
			rel, _ := filepath.Rel(c.dir, m)
			out = append(out, rel)
		}
	}
	slices.Sort(out)
	return out
}

func TestInspectCacheKernelInputs(t *testing.T) {
	c := newKernelCache(t)
	info, err := InspectCache(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]CacheItem{}
	for _, it := range info.Items {
		rel, _ := filepath.Rel(c.dir, it.Path)
		got[rel] = it
	}
	want := []struct {
		rel, kind, name string
		usedBy          []string
	}{
		{c.treeA, KindKernel, testRel, []string{c.imgA}},
		{c.treeB, KindKernel, testRel, []string{c.imgB}},
		{c.treeC, KindKernel, testRel, []string{c.imgC}},
		{c.treeO, KindKernel, testRel, nil},
		{c.broken, KindIncomplete, "", nil},
		{"debs/a.deb", KindDeb, "a", []string{c.imgA}},
		{"debs/b.deb", KindDeb, "b", []string{c.imgB}},
		{"debs/o.deb", KindDeb, "o", nil},
		{"debs/.dl-old", KindTemp, "", nil},
		{"kernels/.tmp-old", KindTemp, "", nil},
	}
	for _, w := range want {
		it, ok := got[w.rel]
		if !ok {
			t.Errorf("%s not listed", w.rel)
			continue
		}
		var usedBy []string
		for _, d := range w.usedBy {
			usedBy = append(usedBy, "sha256:"+d)
		}
		if it.Kind != w.kind || it.Name != w.name || !slices.Equal(it.UsedBy, usedBy) || it.Bytes <= 0 {
			t.Errorf("%s: %+v, want kind %s name %q used by %v", w.rel, it, w.kind, w.name, usedBy)
		}
	}
	for _, bookkeeping := range []string{"debs/.lock", "debs/" + aptMemoFile} {
		if _, ok := got[bookkeeping]; ok {
			t.Errorf("%s listed as an item", bookkeeping)
		}
	}
	kinds := map[string]int{}
	for _, k := range info.Kinds {
		kinds[k.Kind] = k.Count
	}
	if kinds[KindKernel] != 4 || kinds[KindDeb] != 4 || kinds[KindImage] != 3 {
		t.Errorf("kinds %+v", info.Kinds)
	}
}

func TestPruneCacheKernelInputs(t *testing.T) {
	tests := []struct {
		name   string
		opts   func(c *kernelCache) PruneOptions
		remove func(c *kernelCache) []string
	}{
		{
			// b goes (no name), and with it what only b was built from.
			name: "default",
			opts: func(c *kernelCache) PruneOptions { return PruneOptions{Keep: []string{c.imgC}} },
			remove: func(c *kernelCache) []string {
				return []string{c.imgB, c.imgB + ".lock", c.treeB, "debs/b.deb", c.treeO, "debs/o.deb", c.broken, "debs/.dl-old", "kernels/.tmp-old"}
			},
		},
		{
			name: "dry run",
			opts: func(c *kernelCache) PruneOptions { return PruneOptions{DryRun: true, Keep: []string{c.imgC}} },
			remove: func(c *kernelCache) []string {
				return []string{c.imgB, c.treeB, "debs/b.deb", c.treeO, "debs/o.deb", c.broken, "debs/.dl-old", "kernels/.tmp-old"}
			},
		},
		{
			// Only the VM's image and its kernel stay; fresh temp files
			// may belong to a running build and stay too.
			name: "all",
			opts: func(c *kernelCache) PruneOptions { return PruneOptions{All: true, Keep: []string{"sha256:" + c.imgC}} },
			remove: func(c *kernelCache) []string {
				return []string{c.imgA, c.imgA + ".lock", c.imgB, c.imgB + ".lock", c.treeA, c.treeB, c.treeO, c.broken,
					"debs/a.deb", "debs/b.deb", "debs/o.deb", "debs/fresh.deb", "debs/.dl-old", "kernels/.tmp-old"}
			},
		},
		{
			name: "all, nothing in use",
			opts: func(c *kernelCache) PruneOptions { return PruneOptions{All: true} },
			remove: func(c *kernelCache) []string {
				return []string{c.imgA, c.imgA + ".lock", c.imgB, c.imgB + ".lock", c.imgC, c.imgC + ".lock", c.treeA, c.treeB, c.treeC, c.treeO, c.broken,
					"debs/a.deb", "debs/b.deb", "debs/o.deb", "debs/fresh.deb", "debs/.dl-old", "kernels/.tmp-old"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newKernelCache(t)
			before := c.present(t)
			o := tt.opts(c)
			res, err := PruneCache(c.dir, o)
			if err != nil {
				t.Fatal(err)
			}
			// The plan: every item is listed, with a reason; locks
			// of removed entries go with them and are not items.
			var planned []string
			var bytes int64
			for _, it := range res.Items {
				if it.Reason == "" {
					t.Errorf("%s: no reason", it.Path)
				}
				if it.Removed {
					rel, _ := filepath.Rel(c.dir, it.Path)
					planned = append(planned, rel)
					bytes += it.Bytes
				}
			}
			var wantPlan []string
			for _, p := range tt.remove(c) {
				if !strings.HasSuffix(p, ".lock") {
					wantPlan = append(wantPlan, p)
				}
			}
			slices.Sort(planned)
			slices.Sort(wantPlan)
			if !slices.Equal(planned, wantPlan) {
				t.Errorf("plan removes\n %v\nwant\n %v", planned, wantPlan)
			}
			if res.Bytes != bytes || res.Bytes <= 0 || res.DryRun != o.DryRun {
				t.Errorf("result bytes %d (items sum %d), dry run %v", res.Bytes, bytes, res.DryRun)
			}

			after := c.present(t)
			if o.DryRun {
				if !slices.Equal(after, before) {
					t.Errorf("dry run changed the cache:\n before %v\n after  %v", before, after)
				}
				return
			}
			var want []string
			for _, p := range before {
				if !slices.Contains(tt.remove(c), p) {
					want = append(want, p)
				}
			}
			if !slices.Equal(after, want) {
				t.Errorf("left\n %v\nwant\n %v", after, want)
			}
			// Idempotent: nothing more to do right after.
			again, err := PruneCache(c.dir, o)
			if err != nil || len(again.Removed()) != 0 {
				t.Errorf("second prune removes %v (%v)", again.Removed(), err)
			}
		})
	}
}

// TestPruneKeepsRecentlyUsedKernel: a tree unpacked or reused minutes ago
// may be feeding a build that has not written its manifest yet.
func TestPruneKeepsRecentlyUsedKernel(t *testing.T) {
	c := newKernelCache(t)
	now := time.Now()
	if err := os.Chtimes(filepath.Join(c.dir, c.treeO), now, now); err != nil {
		t.Fatal(err)
	}
	res, err := PruneCache(c.dir, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range res.Items {
		if strings.HasSuffix(it.Path, c.treeO) && (it.Removed || !strings.Contains(it.Reason, "a build may need it")) {
			t.Errorf("recent tree: %+v", it)
		}
	}
	res, err = PruneCache(c.dir, PruneOptions{DryRun: true, now: func() time.Time { return now.Add(tempGrace + time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range res.Items {
		if strings.HasSuffix(it.Path, c.treeO) && !it.Removed {
			t.Errorf("tree unused for longer than %v kept: %+v", tempGrace, it)
		}
	}
}

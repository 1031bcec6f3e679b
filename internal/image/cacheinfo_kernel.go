package image

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// listItems lists dir: each entry whose name starts with one of tempPrefixes
// is a temp item; every other entry is offered to classify, which returns the
// item for it, or false to leave it out. A missing dir lists nothing.
func listItems(dir string, tempPrefixes []string, classify func(e os.DirEntry, it CacheItem) (CacheItem, bool)) []CacheItem {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []CacheItem
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		it := CacheItem{Kind: KindTemp, Path: p, Bytes: diskUsage(p), MTime: newestMTime(p)}
		if slices.ContainsFunc(tempPrefixes, func(pre string) bool { return strings.HasPrefix(e.Name(), pre) }) {
			out = append(out, it)
			continue
		}
		if it, ok := classify(e, it); ok {
			out = append(out, it)
		}
	}
	return out
}

// debItems lists <cache>/debs: kernel packages and download temp dirs. The
// lock and the apt memo are bookkeeping, not listed.
func debItems(dir string) []CacheItem {
	return listItems(dir, []string{".dl-", ".tmp-"}, func(e os.DirEntry, it CacheItem) (CacheItem, bool) {
		n := e.Name()
		if !strings.HasSuffix(n, ".deb") || !e.Type().IsRegular() {
			return it, false
		}
		it.Kind, it.Name = KindDeb, strings.TrimSuffix(n, ".deb")
		return it, true
	})
}

// kernelItems lists <cache>/kernels: trees unpacked from kernel packages,
// named by the .deb's SHA-256, and unpack temp dirs.
func kernelItems(dir string) []CacheItem {
	return listItems(dir, []string{".tmp-"}, func(e os.DirEntry, it CacheItem) (CacheItem, bool) {
		if !digestDirRE.MatchString(e.Name()) || !e.IsDir() {
			return it, false
		}
		it.Kind, it.SHA256 = KindIncomplete, e.Name()
		if k, err := loadKernelTree(it.Path); err == nil {
			it.Kind, it.Name = KindKernel, k.Release
		}
		return it, true
	})
}

// inputRefs records which image entries' manifests use which kernel
// packages and unpacked kernels.
type inputRefs struct {
	kernelsRoot string              // <cache>/kernels/, absolute
	debs        map[string][]string // .deb file name -> image digests
	trees       map[string][]string // unpacked kernel dir name -> image digests
}

func newInputRefs(cacheDir string) *inputRefs {
	abs, err := filepath.Abs(cacheDir)
	if err != nil {
		abs = cacheDir
	}
	return &inputRefs{
		kernelsRoot: filepath.Join(abs, kernelsDir) + string(filepath.Separator),
		debs:        map[string][]string{},
		trees:       map[string][]string{},
	}
}

// add notes what one image's inputs use: role kernel-deb names the package
// (by file name, so a moved cache still matches) and, by its SHA-256, the
// tree unpacked from it; kernel and module inputs inside <cache>/kernels
// name the tree by path.
func (r *inputRefs) add(digest string, ins []Input) {
	for _, in := range ins {
		if in.Role == "kernel-deb" {
			r.debs[filepath.Base(in.Path)] = appendOnce(r.debs[filepath.Base(in.Path)], digest)
			if digestDirRE.MatchString(in.SHA256) {
				r.trees[in.SHA256] = appendOnce(r.trees[in.SHA256], digest)
			}
		}
		if rest, ok := strings.CutPrefix(in.Path, r.kernelsRoot); ok {
			tree, _, _ := strings.Cut(rest, string(filepath.Separator))
			if digestDirRE.MatchString(tree) {
				r.trees[tree] = appendOnce(r.trees[tree], digest)
			}
		}
	}
}

func (r *inputRefs) usedBy(it *CacheItem) []string {
	var ds []string
	switch {
	case it.Kind == KindDeb:
		ds = r.debs[filepath.Base(it.Path)]
	case it.SHA256 != "": // unpacked kernel, complete or not
		ds = r.trees[it.SHA256]
	}
	if len(ds) == 0 {
		return nil
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds
}

func appendOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

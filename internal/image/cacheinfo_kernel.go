package image

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// debItems lists <cache>/debs: kernel packages and download temp dirs. The
// lock and the apt memo are bookkeeping, not listed.
func debItems(dir string) []CacheItem {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []CacheItem
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".dl-") || strings.HasPrefix(n, ".tmp-"):
			out = append(out, CacheItem{Kind: KindTemp, Path: p, Bytes: diskUsage(p), MTime: newestMTime(p)})
		case strings.HasSuffix(n, ".deb") && e.Type().IsRegular():
			out = append(out, CacheItem{Kind: KindDeb, Path: p, Name: strings.TrimSuffix(n, ".deb"), Bytes: diskUsage(p), MTime: newestMTime(p)})
		}
	}
	return out
}

// kernelItems lists <cache>/kernels: trees unpacked from kernel packages,
// named by the .deb's SHA-256, and unpack temp dirs.
func kernelItems(dir string) []CacheItem {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []CacheItem
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".tmp-"):
			out = append(out, CacheItem{Kind: KindTemp, Path: p, Bytes: diskUsage(p), MTime: newestMTime(p)})
		case digestDirRE.MatchString(n) && e.IsDir():
			it := CacheItem{Kind: KindIncomplete, Path: p, SHA256: n, Bytes: diskUsage(p), MTime: newestMTime(p)}
			if k, err := loadKernelTree(p); err == nil {
				it.Kind, it.Name = KindKernel, k.Release
			}
			out = append(out, it)
		}
	}
	return out
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

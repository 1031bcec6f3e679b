package image

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Cache item kinds reported by InspectCache and PruneCache.
const (
	KindImage      = "image"      // complete image entry
	KindIncomplete = "incomplete" // entry dir without a valid manifest
	KindBootstrap  = "bootstrap"  // Debian base tarball
	KindTemp       = "temp"       // build in progress or left by a crash
	KindLock       = "lock"       // lock file of an entry that no longer exists
	KindDeb        = "deb"        // downloaded kernel package, <cache>/debs
	KindKernel     = "kernel"     // unpacked kernel package, <cache>/kernels
)

// kindOrder is the order of CacheInfo.Kinds.
var kindOrder = []string{KindImage, KindKernel, KindDeb, KindBootstrap, KindIncomplete, KindTemp, KindLock}

var digestDirRE = lazyRE(`^[0-9a-f]{64}$`)

// CacheItem is one thing in the image cache.
type CacheItem struct {
	Kind   string   `json:"kind"`
	Path   string   `json:"path"`
	Bytes  int64    `json:"bytes"` // disk use (allocated blocks; images are sparse)
	Name   string   `json:"name,omitempty"`
	Digest string   `json:"digest,omitempty"`
	Linked []string `json:"linked,omitempty"` // by-name links pointing here
	// SHA256 of the .deb an unpacked kernel came from (its directory name).
	SHA256 string `json:"sha256,omitempty"`
	// UsedBy are the image digests whose manifest inputs name this kernel
	// package or unpacked kernel.
	UsedBy []string  `json:"used_by,omitempty"`
	MTime  time.Time `json:"mtime,omitzero"`
}

// CacheKindTotal sums one kind.
type CacheKindTotal struct {
	Kind  string `json:"kind"`
	Count int    `json:"count"`
	Bytes int64  `json:"bytes"`
}

// CacheInfo describes the image cache.
type CacheInfo struct {
	Dir        string           `json:"dir"`
	Items      []CacheItem      `json:"items"`
	Kinds      []CacheKindTotal `json:"kinds"`
	TotalBytes int64            `json:"total_bytes"` // of the cache directory
	// Notes say what could not be counted (e.g. an unreachable daemon).
	Notes []string `json:"notes,omitempty"`
}

// InspectCache lists the image cache without changing it. A missing cache is
// empty, not an error.
func InspectCache(cacheDir string) (*CacheInfo, error) {
	info := &CacheInfo{Dir: cacheDir, Items: []CacheItem{}, Kinds: []CacheKindTotal{}}
	links := byNameLinks(cacheDir)
	refs := newInputRefs(cacheDir)
	ents, err := os.ReadDir(cacheDir)
	if errors.Is(err, fs.ErrNotExist) {
		return info, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		p := filepath.Join(cacheDir, e.Name())
		it := CacheItem{Path: p, MTime: newestMTime(p)}
		switch n := e.Name(); {
		case strings.HasPrefix(n, ".tmp-"):
			it.Kind = KindTemp
		case digestDirRE.MatchString(n) && e.IsDir():
			it.Digest = "sha256:" + n
			it.Linked = links[n]
			if m, err := readManifest(p); err == nil && m.Digest == it.Digest {
				if _, err := loadEntry(p, n); err == nil {
					it.Kind, it.Name = KindImage, m.Name
					refs.add(it.Digest, m.Inputs)
					break
				}
			}
			it.Kind = KindIncomplete
		case strings.HasSuffix(n, ".lock") && digestDirRE.MatchString(strings.TrimSuffix(n, ".lock")):
			if _, err := os.Stat(filepath.Join(cacheDir, strings.TrimSuffix(n, ".lock"))); err == nil {
				continue // belongs to a live entry
			}
			it.Kind = KindLock
		case n == bootstrapDir && e.IsDir():
			info.Items = append(info.Items, bootstrapItems(p)...)
			continue
		case n == debsDir && e.IsDir():
			info.Items = append(info.Items, debItems(p)...)
			continue
		case n == kernelsDir && e.IsDir():
			info.Items = append(info.Items, kernelItems(p)...)
			continue
		default:
			continue
		}
		it.Bytes = diskUsage(p)
		info.Items = append(info.Items, it)
	}
	for i := range info.Items {
		info.Items[i].UsedBy = refs.usedBy(&info.Items[i])
	}
	sort.Slice(info.Items, func(i, j int) bool {
		a, b := info.Items[i], info.Items[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Path < b.Path
	})
	totals := map[string]*CacheKindTotal{}
	for _, it := range info.Items {
		t := totals[it.Kind]
		if t == nil {
			t = &CacheKindTotal{Kind: it.Kind}
			totals[it.Kind] = t
		}
		t.Count++
		t.Bytes += it.Bytes
		info.TotalBytes += it.Bytes
	}
	for _, k := range kindOrder {
		if t := totals[k]; t != nil {
			info.Kinds = append(info.Kinds, *t)
		}
	}
	return info, nil
}

func bootstrapItems(dir string) []CacheItem {
	return listItems(dir, []string{".tmp-"}, func(e os.DirEntry, it CacheItem) (CacheItem, bool) {
		if !strings.HasSuffix(e.Name(), ".tar") {
			return it, false
		}
		it.Kind = KindBootstrap
		meta := strings.TrimSuffix(it.Path, ".tar") + ".json"
		if t, err := loadBootstrap(it.Path, meta); err == nil {
			it.Name = t.Suite
			if len(t.Packages) > 0 {
				it.Name += " +" + strings.Join(t.Packages, ",")
			}
			it.Bytes += diskUsage(meta)
		} else {
			it.Kind = KindIncomplete
		}
		return it, true
	})
}

// byNameLinks maps entry digests (hex) to the by-name links pointing at them.
func byNameLinks(cacheDir string) map[string][]string {
	out := map[string][]string{}
	dir := filepath.Join(cacheDir, "by-name")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		d := filepath.Base(target)
		out[d] = append(out[d], e.Name())
	}
	return out
}

func readManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// diskUsage is the space p's files occupy (allocated blocks).
func diskUsage(p string) int64 {
	var total int64
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// newestMTime is the latest modification time of p or its direct children:
// a build in progress keeps touching its temp dir's files.
func newestMTime(p string) time.Time {
	fi, err := os.Lstat(p)
	if err != nil {
		return time.Time{}
	}
	t := fi.ModTime()
	if fi.IsDir() {
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if ci, err := e.Info(); err == nil && ci.ModTime().After(t) {
				t = ci.ModTime()
			}
		}
	}
	return t
}

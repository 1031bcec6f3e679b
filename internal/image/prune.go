package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// tempGrace is how long a temp file must be untouched before prune treats
// it as left by a crash rather than a build in progress.
const tempGrace = 15 * time.Minute

// PruneOptions selects what PruneCache removes.
type PruneOptions struct {
	DryRun bool
	// All also removes linked images, Debian base tarballs and every kernel
	// package and unpacked kernel: everything except Keep and what Keep's
	// images were built from.
	All bool
	// Keep are image digests in use (e.g. by existing VMs), "sha256:<hex>"
	// or bare hex; they are never removed.
	Keep []string
	now  func() time.Time
}

// PruneItem is one cache item and what prune did, or would do, with it.
type PruneItem struct {
	CacheItem
	Removed bool   `json:"removed"` // removed, or with DryRun would be
	Reason  string `json:"reason"`  // why it goes or stays
	Error   string `json:"error,omitempty"`
}

// PruneResult lists every item considered, kept ones too.
type PruneResult struct {
	Dir    string      `json:"dir"`
	DryRun bool        `json:"dry_run"`
	Items  []PruneItem `json:"items"`
	Bytes  int64       `json:"bytes"` // removed, or with DryRun would be
	Notes  []string    `json:"notes,omitempty"`
}

// Removed returns the items removed (with DryRun: to be removed).
func (r *PruneResult) Removed() []PruneItem {
	var out []PruneItem
	for _, it := range r.Items {
		if it.Removed {
			out = append(out, it)
		}
	}
	return out
}

// KeptImages returns the digests of the image entries that stay.
func (r *PruneResult) KeptImages() []string {
	var out []string
	for _, it := range r.Items {
		if it.Kind == KindImage && !it.Removed {
			out = append(out, it.Digest)
		}
	}
	return out
}

// PruneCache removes temp files older than a grace period, incomplete
// entries, images no by-name link points at, lock files of vanished entries,
// and kernel packages and unpacked kernels that no remaining image was built
// from and that were not used within the grace period; with All, every
// image, base tarball, kernel package and unpacked kernel not needed by
// Keep. Entries are removed under their build lock, so a concurrent build is
// never cut short.
func PruneCache(cacheDir string, o PruneOptions) (*PruneResult, error) {
	info, err := InspectCache(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("inspect cache: %w", err)
	}
	now := time.Now
	if o.now != nil {
		now = o.now
	}
	keep := map[string]bool{}
	for _, k := range o.Keep {
		keep["sha256:"+strings.TrimPrefix(k, "sha256:")] = true
	}
	res := &PruneResult{Dir: cacheDir, DryRun: o.DryRun, Items: []PruneItem{}}
	var errs []error
	apply := func(it CacheItem, remove bool, reason string) PruneItem {
		pi := PruneItem{CacheItem: it, Reason: reason}
		if remove && !o.DryRun {
			if err := removeItem(cacheDir, it); err != nil {
				errs = append(errs, err)
				pi.Error = err.Error()
				remove = false
			}
		}
		if remove {
			pi.Removed = true
			res.Bytes += it.Bytes
		}
		res.Items = append(res.Items, pi)
		return pi
	}
	// Kernel packages and trees go last: whether one is needed depends on
	// which images stay, including those whose removal failed.
	staying := map[string]bool{}
	for _, it := range info.Items {
		if it.Kind == KindDeb || it.Kind == KindKernel {
			continue
		}
		remove, reason := planItem(it, o, keep, now())
		if pi := apply(it, remove, reason); it.Kind == KindImage && !pi.Removed {
			staying[it.Digest] = true
		}
	}
	for _, it := range info.Items {
		if it.Kind != KindDeb && it.Kind != KindKernel {
			continue
		}
		remove, reason := planKernelInput(it, o, staying, now())
		apply(it, remove, reason)
	}
	sort.SliceStable(res.Items, func(i, j int) bool {
		a, b := res.Items[i], res.Items[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Path < b.Path
	})
	if !o.DryRun && o.All {
		removeDanglingLinks(cacheDir)
	}
	return res, errors.Join(errs...)
}

// planItem decides about an image entry, base tarball, temp file or lock.
func planItem(it CacheItem, o PruneOptions, keep map[string]bool, now time.Time) (bool, string) {
	switch it.Kind {
	case KindTemp:
		if age := now.Sub(it.MTime); age <= tempGrace {
			return false, "touched " + age.Round(time.Second).String() + " ago; a build may be using it"
		}
		return true, "left by an interrupted build"
	case KindIncomplete:
		if keep[it.Digest] {
			return false, "used by a VM"
		}
		return true, "incomplete"
	case KindLock:
		if keep[it.Digest] {
			return false, "used by a VM"
		}
		return true, "its entry is gone"
	case KindImage:
		switch {
		case keep[it.Digest]:
			return false, "used by a VM"
		case o.All:
			return true, "--all"
		case len(it.Linked) > 0:
			return false, "named " + strings.Join(it.Linked, ", ")
		}
		return true, "no name points at it"
	case KindBootstrap:
		if o.All {
			return true, "--all"
		}
		return false, "base tarball (removed with --all)"
	}
	return false, "unknown kind"
}

// planKernelInput decides about a kernel package or unpacked kernel: kept
// while a staying image was built from it, and, without All, while it was
// used within tempGrace (a build may be between unpacking and writing its
// manifest).
func planKernelInput(it CacheItem, o PruneOptions, staying map[string]bool, now time.Time) (bool, string) {
	for _, d := range it.UsedBy {
		if staying[d] {
			return false, "image " + shortDigest(d) + " was built from it"
		}
	}
	if o.All {
		return true, "--all"
	}
	if age := now.Sub(it.MTime); age <= tempGrace {
		return false, "used " + age.Round(time.Second).String() + " ago; a build may need it"
	}
	return true, "no image was built from it"
}

// removeItem deletes one item, holding its lock when it has one.
func removeItem(cacheDir string, it CacheItem) error {
	lockPath := ""
	switch it.Kind {
	case KindImage, KindIncomplete:
		if it.Digest != "" {
			lockPath = filepath.Join(cacheDir, strings.TrimPrefix(it.Digest, "sha256:")+".lock")
		} else if strings.HasSuffix(it.Path, ".tar") { // incomplete base tarball
			lockPath = strings.TrimSuffix(it.Path, ".tar") + ".lock"
		}
	case KindBootstrap:
		lockPath = strings.TrimSuffix(it.Path, ".tar") + ".lock"
	case KindDeb:
		// fetchKernelDeb holds it while downloading and verifying.
		lockPath = filepath.Join(filepath.Dir(it.Path), ".lock")
	case KindLock:
		lockPath = it.Path
	}
	if lockPath != "" {
		l := flock.New(lockPath)
		ok, err := l.TryLock()
		if err != nil {
			return fmt.Errorf("prune %s: %w", it.Path, err)
		}
		if !ok {
			return fmt.Errorf("prune %s: in use by a build", it.Path)
		}
		defer l.Unlock()
	}
	if err := makeWritable(it.Path); err != nil {
		return fmt.Errorf("prune %s: %w", it.Path, err)
	}
	if err := os.RemoveAll(it.Path); err != nil {
		return fmt.Errorf("prune %s: %w", it.Path, err)
	}
	if it.Kind == KindBootstrap || (it.Kind == KindIncomplete && strings.HasSuffix(it.Path, ".tar")) {
		os.Remove(strings.TrimSuffix(it.Path, ".tar") + ".json")
	}
	if lockPath != "" && it.Kind != KindLock && it.Kind != KindDeb {
		os.Remove(lockPath) // still held: nobody else can be using it
	}
	return nil
}

// makeWritable lets RemoveAll delete sealed (0444) files as a non-root user:
// only the directory needs write permission, which entries keep.
func makeWritable(p string) error {
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return nil
	}
	return os.Chmod(p, fi.Mode().Perm()|0o700)
}

// removeDanglingLinks drops by-name links whose entry is gone.
func removeDanglingLinks(cacheDir string) {
	dir := filepath.Join(cacheDir, "by-name")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(p); err != nil {
			os.Remove(p)
		}
	}
}

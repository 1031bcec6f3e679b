package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// All also removes linked images and Debian base tarballs: everything
	// except Keep.
	All bool
	// Keep are image digests in use (e.g. by existing VMs), "sha256:<hex>"
	// or bare hex; they are never removed.
	Keep []string
	now  func() time.Time
}

// PruneResult lists what was (or, with DryRun, would be) removed.
type PruneResult struct {
	Removed []CacheItem `json:"removed"`
	Bytes   int64       `json:"bytes"`
	DryRun  bool        `json:"dry_run"`
}

// PruneCache removes temp files older than a grace period, incomplete
// entries, images no by-name link points at and lock files of vanished
// entries; with All, every image and base tarball not in Keep. Entries are
// removed under their build lock, so a concurrent build is never cut short.
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
	res := &PruneResult{DryRun: o.DryRun, Removed: []CacheItem{}}
	var errs []error
	for _, it := range info.Items {
		if !shouldPrune(it, o, keep, now()) {
			continue
		}
		if !o.DryRun {
			if err := removeItem(cacheDir, it); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		res.Removed = append(res.Removed, it)
		res.Bytes += it.Bytes
	}
	if !o.DryRun && o.All {
		removeDanglingLinks(cacheDir)
	}
	return res, errors.Join(errs...)
}

func shouldPrune(it CacheItem, o PruneOptions, keep map[string]bool, now time.Time) bool {
	switch it.Kind {
	case KindTemp:
		return now.Sub(it.MTime) > tempGrace
	case KindIncomplete, KindLock:
		return !keep[it.Digest]
	case KindImage:
		return !keep[it.Digest] && (o.All || len(it.Linked) == 0)
	case KindBootstrap:
		return o.All
	}
	return false
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
	if lockPath != "" && it.Kind != KindLock {
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

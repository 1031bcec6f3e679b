package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
)

// Ensure returns the named catalog image, building it into the cache when
// no entry exists for the current inputs.
func Ensure(ctx context.Context, name string, opts BuildOptions) (*Artifacts, error) {
	r, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	return EnsureRecipe(ctx, r, opts)
}

// EnsureRecipe returns the image r describes, building it into the cache
// when no entry exists for its digest (recipe + every input). Concurrent
// callers for the same image build it once.
func EnsureRecipe(ctx context.Context, r *Recipe, opts BuildOptions) (*Artifacts, error) {
	if r == nil {
		return nil, errors.New("nil recipe")
	}
	name := r.Name
	if opts.CacheDir == "" {
		return nil, errors.New("image cache directory not set")
	}
	cacheDir, err := filepath.Abs(opts.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	in, err := resolveInputs(ctx, r, cacheDir, opts)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	defer in.release()
	digestHex := computeDigest(r, in)
	entry := filepath.Join(cacheDir, digestHex)
	if a, err := loadEntry(entry, digestHex); err == nil {
		linkByName(cacheDir, name, digestHex)
		opts.progress("cached")
		return withVmlinux(a, opts)
	}

	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	lock := flock.New(filepath.Join(cacheDir, digestHex+".lock"))
	opts.progress("lock")
	locked, err := lock.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !locked {
		return nil, fmt.Errorf("image %s: lock cache entry: %w", name, errors.Join(err, ctx.Err()))
	}
	defer lock.Unlock()

	// Another process may have finished the build while we waited.
	if a, err := loadEntry(entry, digestHex); err == nil {
		linkByName(cacheDir, name, digestHex)
		return withVmlinux(a, opts)
	}
	if _, err := os.Lstat(entry); err == nil {
		slog.Info("removing incomplete image cache entry", "dir", entry)
		if err := os.RemoveAll(entry); err != nil {
			return nil, fmt.Errorf("image %s: remove incomplete entry: %w", name, err)
		}
	}
	start := time.Now()
	if err := build(ctx, cacheDir, entry, digestHex, r, in, opts); err != nil {
		return nil, fmt.Errorf("build image %s: %w", name, err)
	}
	slog.Debug("image built", "name", name, "digest", digestHex, "took", time.Since(start))
	linkByName(cacheDir, name, digestHex)
	a, err := loadEntry(entry, digestHex)
	if err != nil {
		return nil, err
	}
	return withVmlinux(a, opts)
}

// withVmlinux adds the uncompressed kernel to a cache entry when asked for
// and missing. It is derived from the sealed kernel alone, so writing it
// after the entry was published is safe, and racing writers produce the same
// bytes (the rename is atomic).
func withVmlinux(a *Artifacts, opts BuildOptions) (*Artifacts, error) {
	if !opts.Vmlinux || a.Vmlinux != "" {
		return a, nil
	}
	opts.progress("vmlinux")
	p := filepath.Join(a.Dir, vmlinuxFile)
	if err := ExtractVmlinux(a.Kernel, p); err != nil {
		return nil, fmt.Errorf("image %s: %w", a.Name, err)
	}
	if err := os.Chmod(p, 0o444); err != nil {
		return nil, err
	}
	a.Vmlinux = p
	return a, nil
}

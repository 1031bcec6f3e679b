package artifact

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/mvm-dev/mvm/internal/registry"
)

// PushOptions tune Push. The zero value is usable.
type PushOptions struct {
	// Concurrency is how many blobs are uploaded at once (4 if 0).
	Concurrency int
	Progress    func(Progress)
}

// Push uploads a packed artifact: the layer blobs the store lacks, a few at
// a time, then the config, then the manifest under tag, so a reader that
// sees the tag finds everything it names. It returns the manifest's
// descriptor (what a signature signs).
func Push(ctx context.Context, s registry.Store, tag string, p *Packed, opts PushOptions) (registry.Descriptor, error) {
	if !validTag(tag) {
		return registry.Descriptor{}, fmt.Errorf("push: bad tag %q", clip(tag))
	}
	if p.dir == "" {
		return registry.Descriptor{}, fmt.Errorf("push: packed artifact is closed")
	}
	total := p.ConfigDesc.Size
	for _, b := range p.Blobs {
		total += b.Size
	}
	prog := newProgress(opts.Progress, PhaseUpload, total)
	var sent, skipped int
	counted := make(chan bool, len(p.Blobs))
	// Largest first: the transfer ends when the last big blob does, so
	// none of them should start late.
	blobs := slices.Clone(p.Blobs)
	slices.SortStableFunc(blobs, func(a, b registry.Descriptor) int { return cmp.Compare(b.Size, a.Size) })
	err := forEach(ctx, concurrency(opts.Concurrency, 4), blobs, func(ctx context.Context, d registry.Descriptor) error {
		up, err := pushBlob(ctx, s, d, prog, p.blobFile[d.Digest], func() (io.ReadCloser, error) { return p.OpenBlob(d.Digest) })
		if errors.Is(err, ErrDigest) && p.evict(ctx, d.Digest) {
			err = fmt.Errorf("%w (removed from the blob cache: push again to pack it afresh)", err)
		}
		counted <- up
		return err
	})
	close(counted)
	for up := range counted {
		if up {
			sent++
		} else {
			skipped++
		}
	}
	if err != nil {
		return registry.Descriptor{}, fmt.Errorf("push to %s: %w", s, err)
	}
	if _, err := pushBlob(ctx, s, p.ConfigDesc, prog, "", func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(p.ConfigBytes)), nil
	}); err != nil {
		return registry.Descriptor{}, fmt.Errorf("push to %s: config: %w", s, err)
	}
	d, err := s.PutManifest(ctx, tag, registry.ManifestMediaType, p.Manifest)
	if err != nil {
		return registry.Descriptor{}, fmt.Errorf("push to %s: manifest: %w", s, err)
	}
	if d.Digest != "" && d.Digest != p.ManifestDesc.Digest {
		return registry.Descriptor{}, fmt.Errorf("push to %s: %w: store names the manifest %s, we computed %s", s, ErrDigest, clip(d.Digest), p.ManifestDesc.Digest)
	}
	slog.Debug("artifact pushed", "store", s.String(), "tag", tag, "manifest", p.ManifestDesc.Digest, "blobs_sent", sent, "blobs_present", skipped)
	return p.ManifestDesc, nil
}

// pushBlob uploads one blob unless the store has it, and says whether it
// uploaded. The bytes are hashed on the way: the store refuses a mismatch
// anyway, but only this side can tell that its copy (a cached blob a memo
// pointed at) is the bad one, with ErrDigest.
func pushBlob(ctx context.Context, s registry.Store, d registry.Descriptor, prog *progress, file string, open func() (io.ReadCloser, error)) (bool, error) {
	has, err := s.HasBlob(ctx, d.Digest)
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if has {
		prog.add(file, d.Size)
		return false, nil
	}
	r, err := open()
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer r.Close()
	sum := sha256.New()
	cw := &countWriter{}
	body := io.TeeReader(io.LimitReader(r, d.Size), io.MultiWriter(sum, cw, prog.writer(file)))
	err = s.PutBlob(ctx, d, body)
	if cw.n == d.Size {
		if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != d.Digest {
			return false, fmt.Errorf("%w: local blob %s has digest %s", ErrDigest, d.Digest, got)
		}
	}
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return true, nil
}

// evict removes from the blob cache a blob whose bytes turned out wrong,
// so the next Pack makes it afresh instead of trusting it again, and says
// whether it did.
func (p *Packed) evict(ctx context.Context, digest string) bool {
	h, err := digestHex(digest)
	if err != nil || p.spool || p.dir == "" {
		return false
	}
	final := filepath.Join(p.dir, "sha256", h)
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return false
	}
	defer unlock()
	slog.Warn("artifact: removing a corrupt blob from the cache", "blob", digest)
	return os.Remove(final) == nil
}

package artifact

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"

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
	err := forEach(ctx, concurrency(opts.Concurrency, 4), p.Blobs, func(ctx context.Context, d registry.Descriptor) error {
		up, err := pushBlob(ctx, s, d, prog, p.blobFile[d.Digest], func() (io.ReadCloser, error) { return p.OpenBlob(d.Digest) })
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
// uploaded.
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
	body := io.TeeReader(io.LimitReader(r, d.Size), prog.writer(file))
	if err := s.PutBlob(ctx, d, body); err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return true, nil
}

package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"github.com/klauspost/compress/zstd"

	"github.com/mvm-dev/mvm/internal/registry"
)

// PullOptions tune Pull. BlobDir is required.
type PullOptions struct {
	// BlobDir caches layer blobs by digest (sha256/<hex>), with unfinished
	// downloads as sha256/<hex>.partial that the next pull resumes. Pulls
	// may share it, concurrently too.
	BlobDir string
	// Verify, if set, is shown the manifest's digest and bytes before
	// anything else is read or written; an error refuses the artifact.
	// This is where a signature is checked.
	Verify func(manifestDigest string, manifest []byte) error
	// Concurrency is how many blobs are downloaded at once (4 if 0).
	Concurrency int
	Progress    func(Progress)
}

// Pulled is what Pull put in place.
type Pulled struct {
	Dir      string
	Manifest registry.Descriptor
	Config   *Config
}

const lockRetry = 50 * time.Millisecond

// Pull fetches the artifact ref (a tag or a "sha256:" manifest digest)
// names and rebuilds its files under dstDir, which must not exist.
//
// Order of trust: the manifest's bytes are checked against a digest ref and
// passed to opts.Verify before they are parsed; the config must match the
// manifest's digest for it; each blob must match its digest before it
// enters the cache and again as it is read back; each rebuilt file must
// match its size and SHA-256. Files are built in a staging directory beside
// dstDir and renamed into place only when all are right, so on any error
// nothing is at dstDir. A pull into a dstDir another pull holds waits for
// it, then fails with an error wrapping fs.ErrExist if dstDir appeared.
func Pull(ctx context.Context, s registry.Store, ref, dstDir string, opts PullOptions) (*Pulled, error) {
	if opts.BlobDir == "" {
		return nil, errors.New("pull: no blob cache directory")
	}
	if strings.HasPrefix(ref, "sha256:") {
		if _, err := digestHex(ref); err != nil {
			return nil, fmt.Errorf("pull: %w", err)
		}
	} else if !validTag(ref) {
		return nil, fmt.Errorf("pull: bad tag %q", clip(ref))
	}
	dst, err := filepath.Abs(dstDir)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	if err := absent(dst); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	parent, base := filepath.Dir(dst), filepath.Base(dst)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(parent, "."+base+".lock"))
	if err != nil {
		return nil, fmt.Errorf("pull: lock %s: %w", dst, err)
	}
	defer unlock()
	if err := absent(dst); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	removeStale(parent, "."+base+".pull-")

	pl := &puller{s: s, opts: &opts, cache: filepath.Join(opts.BlobDir, "sha256")}
	res, err := pl.pull(ctx, ref, parent, base, dst)
	if err != nil {
		return nil, fmt.Errorf("pull %s from %s: %w", ref, s, err)
	}
	return res, nil
}

// absent is nil if nothing is at p.
func absent(p string) error {
	_, err := os.Lstat(p)
	if err == nil {
		return &fs.PathError{Op: "destination", Path: p, Err: fs.ErrExist}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// removeStale removes staging directories a killed pull left; the caller
// holds the destination's lock, so no live pull owns them.
func removeStale(parent, prefix string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			p := filepath.Join(parent, e.Name())
			slog.Debug("artifact: removing stale staging directory", "dir", p)
			os.RemoveAll(p)
		}
	}
}

func lockFile(ctx context.Context, path string) (func(), error) {
	l := flock.New(path, flock.SetPermissions(0o600))
	ok, err := l.TryLockContext(ctx, lockRetry)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("not locked")
	}
	return func() { l.Unlock() }, nil
}

type puller struct {
	s     registry.Store
	opts  *PullOptions
	cache string
}

func (pl *puller) pull(ctx context.Context, ref, parent, base, dst string) (*Pulled, error) {
	raw, desc, err := pl.s.GetManifest(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, more than %d", ErrInvalid, len(raw), MaxManifestSize)
	}
	mdig := digestOf(raw)
	if strings.HasPrefix(ref, "sha256:") && ref != mdig {
		return nil, fmt.Errorf("%w: manifest asked for as %s has digest %s", ErrDigest, ref, mdig)
	}
	if desc.Digest != "" && desc.Digest != mdig {
		return nil, fmt.Errorf("%w: store names the manifest %s, its bytes have digest %s", ErrDigest, clip(desc.Digest), mdig)
	}
	if pl.opts.Verify != nil {
		if err := pl.opts.Verify(mdig, raw); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrRefused, mdig, err)
		}
	}
	m, err := DecodeManifest(raw)
	if err != nil {
		return nil, err
	}
	cfgBytes, err := pl.readSmall(ctx, m.Config.Blob())
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := DecodeConfig(cfgBytes)
	if err != nil {
		return nil, err
	}
	layers, err := checkLayers(m, cfg)
	if err != nil {
		return nil, err
	}

	// Download every distinct blob into the cache.
	var blobs []registry.Descriptor
	fileOf := map[string]string{}
	var dlTotal, fileTotal int64
	for i, f := range cfg.Files {
		fileTotal += f.Size
		for _, l := range layers[i] {
			if _, ok := fileOf[l.Digest]; !ok {
				fileOf[l.Digest] = f.Name
				blobs = append(blobs, l.Blob())
				dlTotal += l.Size
			}
		}
	}
	if err := os.MkdirAll(pl.cache, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	dl := newProgress(pl.opts.Progress, PhaseDownload, dlTotal)
	err = forEach(ctx, concurrency(pl.opts.Concurrency, 4), blobs, func(ctx context.Context, d registry.Descriptor) error {
		if err := pl.fetch(ctx, d, dl, fileOf[d.Digest]); err != nil {
			return fmt.Errorf("download %s: %w", fileOf[d.Digest], err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Rebuild the files in a staging directory beside dst (same
	// filesystem, so the final rename is atomic).
	staging, err := os.MkdirTemp(parent, "."+base+".pull-")
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	placed := false
	defer func() {
		if !placed {
			os.RemoveAll(staging)
		}
	}()
	as := newProgress(pl.opts.Progress, PhaseAssemble, fileTotal)
	idx := make([]int, len(cfg.Files))
	for i := range idx {
		idx[i] = i
	}
	err = forEach(ctx, concurrency(0, cpus()), idx, func(ctx context.Context, i int) error {
		return pl.assemble(ctx, staging, &cfg.Files[i], layers[i], as)
	})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return nil, err
	}
	if err := syncDir(staging); err != nil {
		return nil, err
	}
	if err := renameNoReplace(staging, dst); err != nil {
		return nil, err
	}
	placed = true
	if err := syncDir(parent); err != nil {
		slog.Debug("artifact: sync after rename", "dir", parent, "err", err)
	}
	slog.Debug("artifact pulled", "store", pl.s.String(), "ref", ref, "manifest", mdig, "dir", dst, "files", len(cfg.Files), "blobs", len(blobs))
	return &Pulled{
		Dir:      dst,
		Manifest: registry.Descriptor{MediaType: registry.ManifestMediaType, Digest: mdig, Size: int64(len(raw))},
		Config:   cfg,
	}, nil
}

// readSmall reads a whole small blob (the config) into memory, never more
// than its declared size, and checks its digest.
func (pl *puller) readSmall(ctx context.Context, d registry.Descriptor) ([]byte, error) {
	rc, err := pl.s.GetBlob(ctx, d, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, d.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("%w: blob %s: %v", ErrDigest, d.Digest, err)
	}
	if got := digestOf(b); got != d.Digest {
		return nil, fmt.Errorf("%w: blob %s has digest %s", ErrDigest, d.Digest, got)
	}
	return b, nil
}

// fetch makes sure the cache holds blob d, verified. A download appends to
// <hex>.partial, resuming where an earlier attempt stopped; a partial
// whose whole turns out wrong is deleted, the others kept for next time.
// A lock per blob lets concurrent pulls share the cache: the second waits
// and then finds the blob there.
func (pl *puller) fetch(ctx context.Context, d registry.Descriptor, prog *progress, file string) error {
	h, err := digestHex(d.Digest)
	if err != nil {
		return err
	}
	final := filepath.Join(pl.cache, h)
	if cached(final, d.Size) {
		prog.add(file, d.Size)
		return nil
	}
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return fmt.Errorf("lock blob %s: %w", d.Digest, err)
	}
	defer unlock()
	if cached(final, d.Size) {
		prog.add(file, d.Size)
		return nil
	}
	os.Remove(final) // wrong size: not ours to trust

	part := final + ".partial"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	off, err := io.Copy(sum, io.LimitReader(f, d.Size+1))
	if err != nil {
		return err
	}
	if off > d.Size {
		off = 0
		sum.Reset()
		if err := f.Truncate(0); err != nil {
			return err
		}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	prog.add(file, off)
	if off < d.Size {
		if off > 0 {
			slog.Debug("artifact: resuming blob download", "blob", d.Digest, "offset", off, "size", d.Size)
		}
		rc, err := pl.s.GetBlob(ctx, d, off)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		n, err := io.Copy(io.MultiWriter(f, sum, prog.writer(file)), io.LimitReader(rc, d.Size-off))
		rc.Close()
		if err != nil {
			return fmt.Errorf("blob %s: after %d of %d bytes: %w", d.Digest, off+n, d.Size, err)
		}
		if off+n != d.Size {
			return fmt.Errorf("blob %s: store sent %d of %d bytes: %w", d.Digest, off+n, d.Size, io.ErrUnexpectedEOF)
		}
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		f.Close()
		os.Remove(part)
		return fmt.Errorf("%w: blob %s has digest sha256:%s (discarded)", ErrDigest, d.Digest, got)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, final)
}

func cached(p string, size int64) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// assemble rebuilds one file from its chunks' cached blobs, writing it
// sparse and checking each blob's digest as it is read and the file's
// size and SHA-256 at the end.
func (pl *puller) assemble(ctx context.Context, staging string, f *File, layers []Descriptor, prog *progress) error {
	path := filepath.Join(staging, filepath.FromSlash(f.Name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	dec, err := newDecoder()
	if err != nil {
		return err
	}
	defer dec.Close()

	whole := sha256.New()
	sw := &sparseWriter{f: out}
	for i, c := range f.Chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := pl.unpackChunk(dec, layers[i], c, io.MultiWriter(sw, whole, prog.writer(f.Name))); err != nil {
			return fmt.Errorf("file %s chunk %d: %w", f.Name, i, err)
		}
	}
	if sw.off != f.Size {
		return fmt.Errorf("%w: file %s rebuilt to %d bytes, want %d", ErrDigest, f.Name, sw.off, f.Size)
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%w: file %s has sha256 %s, config says %s", ErrDigest, f.Name, got, f.SHA256)
	}
	if err := out.Truncate(f.Size); err != nil {
		return err
	}
	if err := out.Chmod(f.Mode); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

// unpackChunk writes chunk c, decompressed if its layer is, to w. The blob
// is hashed as it is read; a cached blob that no longer matches its digest
// is removed so the next pull fetches it again.
func (pl *puller) unpackChunk(dec *zstd.Decoder, l Descriptor, c Chunk, w io.Writer) error {
	h, err := digestHex(l.Digest)
	if err != nil {
		return err
	}
	p := filepath.Join(pl.cache, h)
	bf, err := os.Open(p)
	if err != nil {
		return err
	}
	defer bf.Close()
	sum := sha256.New()
	br := io.TeeReader(io.LimitReader(bf, l.Size), sum)
	lw := &limitWriter{w: w, n: c.Size}
	var n int64
	if l.MediaType == registry.LayerZstdMediaType {
		if err = dec.Reset(br); err == nil {
			n, err = io.Copy(lw, dec)
		}
	} else {
		n, err = io.Copy(lw, br)
	}
	// Hash what the decoder left unread, then judge the blob first: a
	// corrupt blob explains a decoding error.
	if _, derr := io.Copy(io.Discard, br); derr != nil && err == nil {
		err = derr
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		os.Remove(p)
		return fmt.Errorf("%w: cached blob %s has digest sha256:%s (removed; pull again)", ErrDigest, l.Digest, got)
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", l.Digest, err)
	}
	if n != c.Size {
		return fmt.Errorf("%w: blob %s holds %d bytes, chunk is %d", ErrDigest, l.Digest, n, c.Size)
	}
	return nil
}

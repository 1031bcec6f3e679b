package artifact

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// VerifyFiles also reads every rebuilt file back and checks it against
	// the SHA-256 the config records. Without it that hash is checked only
	// where it follows from a blob digest for free (a file stored as one
	// raw chunk): the manifest pins the config, the config pins every
	// chunk's blob, each blob is hashed before its bytes are trusted, and a
	// file is nothing but its chunks decompressed, so its bytes are a
	// function of verified bytes already. The whole-file hash then guards
	// only against a faulty decompressor or disk, at the cost of hashing
	// every byte of every file, holes included.
	VerifyFiles bool
	// SkipSync leaves writing the rebuilt files to disk to the kernel:
	// Pull returns without waiting for the disk, but a crash soon after
	// can leave files of the right size that read as zeros. Nothing
	// verified changes; it is the durability of the result.
	SkipSync bool
	// Concurrency is how many blobs are fetched and unpacked at once (4 if
	// 0).
	Concurrency int
	Progress    func(Progress)
}

// Pulled is what Pull put in place.
type Pulled struct {
	Dir      string
	Manifest registry.Descriptor
	Config   *Config
	// ConfigBytes is the config blob as stored (its digest checked).
	ConfigBytes []byte
}

const lockRetry = 50 * time.Millisecond

// Pull fetches the artifact ref (a tag or a "sha256:" manifest digest)
// names and rebuilds its files under dstDir, which must not exist.
//
// Order of trust: the manifest's bytes are checked against a digest ref and
// passed to opts.Verify before they are parsed; the config must match the
// manifest's digest for it; each blob must match its digest before it
// enters the cache, and one found there (left by an earlier pull or a
// pack) is hashed again as it is read. Files are built from the chunks in a staging directory
// beside dstDir, as the blobs arrive, and renamed into place only when
// every blob has proved right and every file has its size (and, with
// VerifyFiles, its SHA-256), so on any error nothing is at dstDir. A pull
// into a dstDir another pull holds waits for it, then fails with an error
// wrapping fs.ErrExist if dstDir appeared.
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
	pl.closeDecoders()
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
	s       registry.Store
	opts    *PullOptions
	cache   string
	staging string
	cfg     *Config
	dl, as  *progress
	flush   *flusher

	mu   sync.Mutex
	decs []*zstd.Decoder // idle decoders
	all  []*zstd.Decoder
}

// blobJob is one distinct blob and the chunks made of it.
type blobJob struct {
	l      Descriptor
	uses   []chunkRef
	cached bool // in the cache when the pull began, counted as downloaded
}

type chunkRef struct{ file, chunk int }

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
	if err := checkImpliedHashes(cfg, layers); err != nil {
		return nil, err
	}
	pl.cfg = cfg

	// One job per distinct blob, largest first: the pull ends when the
	// last big blob is in, so none of them should start late.
	var jobs []*blobJob
	byDigest := map[string]*blobJob{}
	var dlTotal, fileTotal int64
	for i, f := range cfg.Files {
		fileTotal += f.Size
		for j, l := range layers[i] {
			jb, ok := byDigest[l.Digest]
			if !ok {
				jb = &blobJob{l: l}
				byDigest[l.Digest] = jb
				jobs = append(jobs, jb)
				dlTotal += l.Size
			}
			jb.uses = append(jb.uses, chunkRef{i, j})
		}
	}
	slices.SortStableFunc(jobs, func(a, b *blobJob) int { return cmp.Compare(b.l.Size, a.l.Size) })
	if err := os.MkdirAll(pl.cache, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
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
	pl.staging = staging
	for i := range cfg.Files {
		if err := pl.create(&cfg.Files[i]); err != nil {
			return nil, err
		}
	}

	// Assembly runs as the blobs arrive; its progress is held back until
	// the download is done, so a progress bar moves through one phase and
	// then the other.
	pl.as = newHeldProgress(pl.opts.Progress, PhaseAssemble, fileTotal)
	pl.dl = newProgress(pl.opts.Progress, PhaseDownload, dlTotal)
	pl.dl.whenDone(pl.as.release)
	for _, jb := range jobs {
		if h, err := digestHex(jb.l.Digest); err == nil && cached(filepath.Join(pl.cache, h), jb.l.Size) {
			jb.cached = true
			pl.dl.add(cfg.Files[jb.uses[0].file].Name, jb.l.Size)
		}
	}
	if !pl.opts.SkipSync {
		pl.flush = newFlusher(len(m.Layers))
		defer pl.flush.close()
	}
	err = forEach(ctx, concurrency(pl.opts.Concurrency, 4), jobs, func(ctx context.Context, jb *blobJob) error {
		return pl.runJob(ctx, jb)
	})
	if err != nil {
		return nil, err
	}
	pl.as.release()
	pl.flush.close()

	// Mostly waiting for the disk, so more at once than there are CPUs.
	err = forEach(ctx, 8, cfg.Files, func(ctx context.Context, f File) error {
		return pl.finish(&f)
	})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return nil, err
	}
	if !pl.opts.SkipSync {
		if err := syncDir(staging); err != nil {
			return nil, err
		}
	}
	if err := renameNoReplace(staging, dst); err != nil {
		return nil, err
	}
	placed = true
	if !pl.opts.SkipSync {
		if err := syncDir(parent); err != nil {
			slog.Debug("artifact: sync after rename", "dir", parent, "err", err)
		}
	}
	slog.Debug("artifact pulled", "store", pl.s.String(), "ref", ref, "manifest", mdig, "dir", dst, "files", len(cfg.Files), "blobs", len(jobs))
	return &Pulled{
		Dir:         dst,
		Manifest:    registry.Descriptor{MediaType: registry.ManifestMediaType, Digest: mdig, Size: int64(len(raw))},
		Config:      cfg,
		ConfigBytes: cfgBytes,
	}, nil
}

// emptySHA256 is the SHA-256 of no bytes.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// checkImpliedHashes checks the file hashes the config records wherever
// the blob digests already determine them: an empty file's, and that of a
// file stored as a single raw chunk, whose blob is the file. It costs
// nothing and catches a config whose hashes disagree with its chunks
// without hashing the files.
func checkImpliedHashes(cfg *Config, layers [][]Descriptor) error {
	for i, f := range cfg.Files {
		want := ""
		switch {
		case len(f.Chunks) == 0:
			want = emptySHA256
		case len(f.Chunks) == 1 && f.Chunks[0].whole() && layers[i][0].MediaType == registry.LayerMediaType:
			want = strings.TrimPrefix(f.Chunks[0].Digest, "sha256:")
		default:
			continue
		}
		if f.SHA256 != want {
			return fmt.Errorf("%w: file %s: config says sha256 %s, its content has %s", ErrDigest, f.Name, f.SHA256, want)
		}
	}
	return nil
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

func (pl *puller) path(f *File) string {
	return filepath.Join(pl.staging, filepath.FromSlash(f.Name))
}

// create makes f's file, empty: chunks are written into it at their
// offsets, and finish gives it its size, so what no chunk writes is a hole.
func (pl *puller) create(f *File) error {
	p := pl.path(f)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return out.Close()
}

// runJob gets one blob, from the cache or the store, and writes every
// chunk made of it. The first chunk is unpacked from the blob's bytes as
// they are read (and hashed); the others read the blob again unhashed, as
// this pull has just proved it right, or are skipped when it unpacked to
// nothing but zeros: their ranges are holes already.
func (pl *puller) runJob(ctx context.Context, jb *blobJob) error {
	h, err := digestHex(jb.l.Digest)
	if err != nil {
		return err
	}
	final := filepath.Join(pl.cache, h)
	first := jb.uses[0]
	var zero bool
	switch {
	case jb.cached:
		zero, err = pl.fromCache(ctx, jb.l, final, first, true)
	case cached(final, jb.l.Size): // a concurrent pull just fetched it
		pl.dl.add(pl.cfg.Files[first.file].Name, jb.l.Size)
		zero, err = pl.fromCache(ctx, jb.l, final, first, true)
	default:
		zero, err = pl.download(ctx, jb.l, final, first)
	}
	if err != nil {
		return err
	}
	for _, u := range jb.uses[1:] {
		c := &pl.cfg.Files[u.file].Chunks[u.chunk]
		if zero {
			pl.as.add(pl.cfg.Files[u.file].Name, c.Size)
			continue
		}
		if _, err := pl.fromCache(ctx, jb.l, final, u, false); err != nil {
			return err
		}
	}
	return nil
}

// fromCache unpacks chunk u from the cached blob at p. With verify, the
// blob is hashed on the way and, if it no longer matches its digest,
// removed so the next pull fetches it again.
func (pl *puller) fromCache(ctx context.Context, l Descriptor, p string, u chunkRef, verify bool) (bool, error) {
	bf, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer bf.Close()
	var r io.Reader = io.LimitReader(bf, l.Size)
	var sum hash.Hash
	if verify {
		sum = sha256.New()
		r = io.TeeReader(r, sum)
	}
	r = newBlobReader(r)
	zero, err := pl.unpack(ctx, l, r, u)
	if verify {
		// Hash what the decoder left unread, then judge the blob first: a
		// corrupt blob explains a decoding error.
		if _, derr := io.Copy(io.Discard, r); derr != nil && err == nil {
			err = derr
		}
		if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != l.Digest {
			os.Remove(p)
			return false, fmt.Errorf("%w: cached blob %s has digest %s (removed; pull again)", ErrDigest, l.Digest, got)
		}
	}
	return zero, err
}

// download fetches blob l into the cache at final and unpacks chunk u from
// it as it arrives. It appends to <hex>.partial, resuming where an earlier
// attempt stopped (the bytes already there are read back into the
// unpacking, then the rest streamed); a partial whose whole turns out
// wrong is deleted, the others kept for next time. A blob enters the cache
// only once its digest is right. A lock per blob lets concurrent pulls
// share the cache: the second waits and then finds the blob there.
func (pl *puller) download(ctx context.Context, l Descriptor, final string, u chunkRef) (bool, error) {
	file := pl.cfg.Files[u.file].Name
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return false, fmt.Errorf("lock blob %s: %w", l.Digest, err)
	}
	defer unlock()
	if cached(final, l.Size) {
		pl.dl.add(file, l.Size)
		return pl.fromCache(ctx, l, final, u, true)
	}
	os.Remove(final) // wrong size: not ours to trust

	part := final + ".partial"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	have := fi.Size()
	if have > l.Size {
		if err := f.Truncate(0); err != nil {
			return false, err
		}
		have = 0
	}
	if have > 0 {
		slog.Debug("artifact: resuming blob download", "blob", l.Digest, "offset", have, "size", l.Size)
	}
	bs := &blobStream{
		ctx: ctx, s: pl.s, d: l.Blob(), f: f, have: have, sum: sha256.New(),
		prog: pl.dl.writer(file),
	}
	defer bs.close()
	r := newBlobReader(bs)
	zero, uerr := pl.unpack(ctx, l, r, u)
	// Take in whatever the unpacking left unread: the digest covers all of
	// it, and judges a decoding error (a corrupt blob explains one).
	if _, err := io.Copy(io.Discard, r); err != nil && bs.err == nil {
		bs.err = err
	}
	if bs.err != nil {
		return false, fmt.Errorf("download %s: blob %s: %w", file, l.Digest, bs.err)
	}
	if got := "sha256:" + hex.EncodeToString(bs.sum.Sum(nil)); got != l.Digest {
		f.Close()
		os.Remove(part)
		return false, fmt.Errorf("download %s: %w: blob %s has digest %s (discarded)", file, ErrDigest, l.Digest, got)
	}
	// No fsync: a blob a crash damaged is caught by the hash the next pull
	// takes of every blob it did not download itself (and a push, of
	// every blob it uploads).
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(part, final); err != nil {
		return false, err
	}
	return zero, uerr
}

// blobStream reads a blob from its start: first what an earlier attempt
// left in the partial file, then the rest from the store, appended to the
// partial as it comes. Everything read is hashed. err keeps the first
// failure to fetch or save bytes, as opposed to a failure to decode them.
type blobStream struct {
	ctx  context.Context
	s    registry.Store
	d    registry.Descriptor
	f    *os.File
	have int64 // bytes in the partial file when the download began
	sum  hash.Hash
	prog io.Writer
	n    int64
	rc   io.ReadCloser
	err  error
}

func (b *blobStream) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.n >= b.d.Size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.d.Size-b.n)]
	if b.n < b.have {
		n, err := b.f.ReadAt(p[:min(int64(len(p)), b.have-b.n)], b.n)
		if n == 0 && err != nil {
			b.err = fmt.Errorf("reading the partial download: %w", err)
			return 0, b.err
		}
		b.sum.Write(p[:n])
		b.prog.Write(p[:n])
		b.n += int64(n)
		return n, nil
	}
	if b.rc == nil {
		rc, err := b.s.GetBlob(b.ctx, b.d, b.n)
		if err != nil {
			b.err = err
			return 0, err
		}
		b.rc = rc
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		if _, werr := b.f.WriteAt(p[:n], b.n); werr != nil {
			b.err = werr
			return 0, werr
		}
		b.sum.Write(p[:n])
		b.prog.Write(p[:n])
		b.n += int64(n)
	}
	switch {
	case err == io.EOF && b.n < b.d.Size:
		b.err = fmt.Errorf("store sent %d of %d bytes: %w", b.n, b.d.Size, io.ErrUnexpectedEOF)
	case err != nil && err != io.EOF:
		b.err = fmt.Errorf("after %d of %d bytes: %w", b.n, b.d.Size, err)
	}
	if b.err != nil && n == 0 {
		return 0, b.err
	}
	return n, nil
}

func (b *blobStream) close() {
	if b.rc != nil {
		b.rc.Close()
	}
}

// newBlobReader buffers blob bytes for the decoder, which reads block
// headers a few bytes at a time: unbuffered, each of those would be a
// system call (and a write to the partial file) of its own.
func newBlobReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 256<<10) }

// unpack writes chunk u, decompressed if its layer is, from the blob bytes
// r yields, and reports whether it was all zeros (nothing written). A
// stream that unpacks to more or fewer bytes than the chunk declares is
// refused.
func (pl *puller) unpack(ctx context.Context, l Descriptor, r io.Reader, u chunkRef) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f := &pl.cfg.Files[u.file]
	c := &f.Chunks[u.chunk]
	out, err := os.OpenFile(pl.path(f), os.O_WRONLY, 0)
	if err != nil {
		return false, err
	}
	defer out.Close()
	sw := &sparseWriter{f: out, off: c.Offset}
	dn := c.DataSize()
	lw := &limitWriter{w: &extentWriter{sw: sw, base: c.Offset, ext: c.Data}, n: dn}
	var n int64
	if l.MediaType == registry.LayerZstdMediaType {
		dec, err := pl.decoder()
		if err != nil {
			return false, err
		}
		if err = dec.Reset(r); err == nil {
			n, err = io.Copy(lw, dec)
		}
		// Drop the decoder's hold on r before it goes back to the pool.
		dec.Reset(nil)
		pl.putDecoder(dec)
		if err != nil {
			return false, fmt.Errorf("file %s chunk %d: blob %s: %w", f.Name, c.Index, l.Digest, err)
		}
	} else {
		if n, err = io.Copy(lw, r); err != nil {
			return false, fmt.Errorf("file %s chunk %d: blob %s: %w", f.Name, c.Index, l.Digest, err)
		}
	}
	if n != dn {
		return false, fmt.Errorf("%w: file %s chunk %d: blob %s holds %d bytes, the chunk's data is %d", ErrDigest, f.Name, c.Index, l.Digest, n, dn)
	}
	// The chunk's holes count as assembled too.
	pl.as.add(f.Name, c.Size)
	if sw.data {
		pl.flush.add(pl.path(f), c.Offset, c.Size)
	}
	return !sw.data, out.Close()
}

// decoder takes an idle decoder or makes one; there are never more than
// there are jobs running at once.
func (pl *puller) decoder() (*zstd.Decoder, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if n := len(pl.decs); n > 0 {
		d := pl.decs[n-1]
		pl.decs = pl.decs[:n-1]
		return d, nil
	}
	d, err := newDecoder()
	if err != nil {
		return nil, err
	}
	pl.all = append(pl.all, d)
	return d, nil
}

func (pl *puller) putDecoder(d *zstd.Decoder) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.decs = append(pl.decs, d)
}

func (pl *puller) closeDecoders() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, d := range pl.all {
		d.Close()
	}
	pl.all, pl.decs = nil, nil
}

// finish gives a rebuilt file its size and mode, checks it against the
// config's SHA-256 if asked to, and makes it durable: a template must not
// come back from a crash as a file of the right size full of zeros.
func (pl *puller) finish(f *File) error {
	out, err := os.OpenFile(pl.path(f), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(f.Size); err != nil {
		return err
	}
	if pl.opts.VerifyFiles {
		h := sha256.New()
		n, err := io.Copy(h, io.NewSectionReader(out, 0, f.Size+1))
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != f.Size || got != f.SHA256 {
			return fmt.Errorf("%w: file %s has sha256 %s, config says %s", ErrDigest, f.Name, got, f.SHA256)
		}
	}
	if err := out.Chmod(f.Mode); err != nil {
		return err
	}
	if !pl.opts.SkipSync {
		if err := out.Sync(); err != nil {
			return err
		}
	}
	return out.Close()
}

// flusher starts writing rebuilt chunks to disk in the background while
// later ones are still being unpacked, so the fsyncs that end the pull
// have less left to wait for. It runs beside the unpacking, not in it,
// because even starting writeback can stall on a busy disk. A nil flusher
// does nothing.
type flusher struct {
	ch   chan flushRange
	stop atomic.Bool
	once sync.Once
	done chan struct{}
}

type flushRange struct {
	path   string
	off, n int64
}

func newFlusher(queue int) *flusher {
	fl := &flusher{ch: make(chan flushRange, queue), done: make(chan struct{})}
	go fl.run()
	return fl
}

func (fl *flusher) run() {
	defer close(fl.done)
	for r := range fl.ch {
		if fl.stop.Load() {
			continue
		}
		f, err := os.Open(r.path)
		if err != nil {
			continue
		}
		startWriteback(f, r.off, r.n)
		f.Close()
	}
}

// add queues a range; if the queue is full it is dropped, being only a
// head start for the fsync.
func (fl *flusher) add(path string, off, n int64) {
	if fl == nil {
		return
	}
	select {
	case fl.ch <- flushRange{path, off, n}:
	default:
	}
}

// close stops the flusher and waits for it; ranges still queued are left
// to the fsyncs.
func (fl *flusher) close() {
	if fl == nil {
		return
	}
	fl.once.Do(func() {
		fl.stop.Store(true)
		close(fl.ch)
		<-fl.done
	})
}

func cached(p string, size int64) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// extentWriter writes a chunk's data stream at its extents' places in the
// file, leaving the gaps between them holes.
type extentWriter struct {
	sw   *sparseWriter
	base int64 // the chunk's offset in the file
	ext  [][2]int64
	next int   // extent to start after this one
	left int64 // bytes left of the current extent
}

func (w *extentWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if w.left == 0 {
			if w.next >= len(w.ext) {
				return n, errTooLong
			}
			e := w.ext[w.next]
			w.sw.off, w.left = w.base+e[0], e[1]
			w.next++
		}
		k := int(min(int64(len(p)), w.left))
		m, err := w.sw.Write(p[:k])
		n += m
		w.left -= int64(m)
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

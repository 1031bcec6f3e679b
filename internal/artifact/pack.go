package artifact

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mvm-dev/mvm/internal/registry"
)

// Defaults for PackOptions.
const (
	// DefaultChunkSize keeps a layer (at most this, compressed or not) far
	// below per-layer limits of registries and proxies in front of them,
	// bounds what a broken download loses, and cuts a snapshot's RAM file
	// into enough pieces for every CPU to unpack one at once. (All-zero
	// chunks cost nothing: they share one empty blob.) Pack doubles it for
	// inputs that would otherwise need more than MaxChunks/2 chunks.
	DefaultChunkSize = 16 << 20
	// DefaultCompressMin: files up to this size (JSON, small state) are
	// stored raw; compressing them saves little and makes them unreadable
	// to a human browsing the registry.
	DefaultCompressMin = 1 << 20
)

// Input is one file to pack: Name in the artifact, Path on disk.
type Input struct {
	Name string
	Path string
	// Mode is the file's mode in the artifact (0644, 0600 or 0444); 0
	// derives it from the file's permissions: 0600 if only its owner may
	// read it, else 0444 if nobody may write it, else 0644.
	Mode os.FileMode
}

// PackOptions tune Pack. The zero value is usable.
type PackOptions struct {
	// TempDir is where the spool directory of blobs goes (os.TempDir() if
	// empty) when there is no BlobDir. It needs room for the compressed
	// artifact.
	TempDir string
	// BlobDir, if set, is a blob cache laid out as Pull's (sha256/<hex>,
	// shared the same way with concurrent pulls and packs): blobs are
	// written there instead of a spool and stay after Close, so a later
	// Pack can take unchanged files from Memo and a pull on this host finds
	// them in place.
	BlobDir string
	// Memo is Packed.MarshalMemo of an earlier Pack into the same BlobDir:
	// files on disk that are exactly the versions it records (inode, size,
	// mode, mtime, ctime) and whose blobs are all still in BlobDir are
	// taken from it without being read. A memo that does not fit is
	// ignored.
	Memo []byte
	// ChunkSize is the uncompressed size of a chunk (DefaultChunkSize if
	// 0), between MinChunkSize and MaxChunkSize.
	ChunkSize int64
	// CompressMin: files larger than this are zstd-compressed, chunk by
	// chunk, where that saves at least 1/32 (DefaultCompressMin if 0; -1
	// compresses nothing).
	CompressMin int64
	// Template is the caller's metadata for Config.Template (JSON).
	Template json.RawMessage
	// Name, if set, is the manifest's dev.mvm.template annotation.
	Name string
	// Created, if set, is the manifest's org.opencontainers.image.created
	// annotation. Leave it zero for a manifest digest that depends only on
	// the files.
	Created time.Time
	// Annotations are added to the manifest's.
	Annotations map[string]string
	// Concurrency is how many files are packed at once (GOMAXPROCS, at most
	// 4, if 0).
	Concurrency int
	Progress    func(Progress)
}

// Packed is a packed artifact: its manifest and config, ready to push, and
// its layer blobs in a spool directory or the BlobDir. Close removes a
// spool.
type Packed struct {
	Config       Config
	ConfigBytes  []byte
	ConfigDesc   registry.Descriptor
	Manifest     []byte
	ManifestDesc registry.Descriptor
	// Blobs are the distinct layer blobs, in the order the manifest first
	// uses them.
	Blobs []registry.Descriptor
	// Reused names the files taken from PackOptions.Memo unread.
	Reused []string

	dir      string            // holds sha256/<hex>
	spool    bool              // dir is this pack's own, removed by Close
	blobFile map[string]string // digest → first file using it, for progress
	memo     packMemo
}

// Close removes the spooled blobs; blobs in a BlobDir stay.
func (p *Packed) Close() error {
	if p.dir == "" {
		return nil
	}
	var err error
	if p.spool {
		err = os.RemoveAll(p.dir)
	}
	p.dir = ""
	return err
}

// OpenBlob opens a spooled layer blob.
func (p *Packed) OpenBlob(digest string) (*os.File, error) {
	h, err := digestHex(digest)
	if err != nil {
		return nil, err
	}
	if p.dir == "" {
		return nil, errors.New("packed artifact is closed")
	}
	return os.Open(filepath.Join(p.dir, "sha256", h))
}

// modeOf maps a source file's permissions onto the allowed modes: private
// stays private (guest RAM, keys), read-only stays read-only.
func modeOf(perm os.FileMode) os.FileMode {
	switch {
	case perm&0o077 == 0:
		return 0o600
	case perm&0o200 == 0:
		return 0o444
	default:
		return 0o644
	}
}

// Pack reads the inputs and builds an artifact of them: files sorted by
// name, each cut into chunks compressed deterministically, so the same
// files and options give the same digests. Whole chunks the filesystem
// reports as holes are not read, nor files opts.Memo vouches for. The
// files must not change while Pack reads them; a change of size or mtime
// is an error.
func Pack(ctx context.Context, inputs []Input, opts PackOptions) (_ *Packed, err error) {
	if opts.ChunkSize < 0 || opts.ChunkSize > 0 && opts.ChunkSize < MinChunkSize || opts.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("pack: chunk size %d outside [%d, %d]", opts.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if opts.CompressMin == 0 {
		opts.CompressMin = DefaultCompressMin
	}
	if opts.CompressMin < 0 {
		opts.CompressMin = MaxFileSize
	}
	var template json.RawMessage
	if len(opts.Template) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, opts.Template); err != nil {
			return nil, fmt.Errorf("pack: template metadata: %w", err)
		}
		template = buf.Bytes()
	}
	if err := validateAnnotations(opts.Annotations); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}

	inputs = slices.Clone(inputs)
	slices.SortFunc(inputs, func(a, b Input) int { return strings.Compare(a.Name, b.Name) })
	names := make([]string, len(inputs))
	for i, in := range inputs {
		if err := ValidateName(in.Name); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if in.Mode != 0 && !allowedModes[in.Mode] {
			return nil, fmt.Errorf("pack: %s: mode %#o not allowed (0644, 0600 or 0444)", in.Name, uint32(in.Mode))
		}
		names[i] = in.Name
	}
	if len(inputs) == 0 || len(inputs) > MaxFiles {
		return nil, fmt.Errorf("pack: %d files, want 1 to %d", len(inputs), MaxFiles)
	}
	if err := validateNames(names); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	var total int64
	sizes := make([]int64, len(inputs))
	for i, in := range inputs {
		fi, err := os.Stat(in.Path)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("pack: %s is not a regular file", in.Path)
		}
		sizes[i] = fi.Size()
		total += fi.Size()
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = chunkSizeFor(sizes)
	}
	if chunks := countChunks(sizes, opts.ChunkSize); chunks > MaxChunks {
		return nil, fmt.Errorf("pack: %d chunks, more than %d: use a larger chunk size", chunks, MaxChunks)
	}

	pk := &packer{
		opts:  &opts,
		prog:  newProgress(opts.Progress, PhasePack, total),
		seed:  maphash.MakeSeed(),
		files: make([]packedFile, len(inputs)),
	}
	var root string
	if opts.BlobDir != "" {
		root, pk.shared = opts.BlobDir, true
		pk.blobs, pk.tmp = filepath.Join(root, "sha256"), filepath.Join(root, "tmp")
		for _, d := range []string{pk.blobs, pk.tmp} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, fmt.Errorf("pack: blob cache: %w", err)
			}
		}
		cleanTemps(pk.tmp)
		pk.prior = loadMemo(opts.Memo, &opts)
	} else {
		if root, err = os.MkdirTemp(opts.TempDir, "mvm-pack-"); err != nil {
			return nil, fmt.Errorf("pack: spool: %w", err)
		}
		defer func() {
			if err != nil {
				os.RemoveAll(root)
			}
		}()
		pk.blobs, pk.tmp = filepath.Join(root, "sha256"), root
		if err := os.Mkdir(pk.blobs, 0o700); err != nil {
			return nil, fmt.Errorf("pack: spool: %w", err)
		}
	}

	// Largest files first, so a big one does not start last and keep
	// everyone waiting while the other workers idle.
	idx := make([]int, len(inputs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(sizes[b], sizes[a]) })
	err = forEach(ctx, concurrency(opts.Concurrency, cpus()), idx, func(ctx context.Context, i int) error {
		if pf, ok := pk.reuse(inputs[i]); ok {
			pk.files[i] = pf
			pk.prog.add(inputs[i].Name, pf.file.Size)
			return nil
		}
		pf, err := pk.packFile(ctx, inputs[i])
		if err != nil {
			return fmt.Errorf("pack %s: %w", inputs[i].Path, err)
		}
		pk.files[i] = pf
		return nil
	})
	if err != nil {
		return nil, err
	}

	p := &Packed{
		Config:   Config{Version: ConfigVersion, Template: template},
		dir:      root,
		spool:    !pk.shared,
		blobFile: map[string]string{},
		memo:     packMemo{Version: memoVersion, Encoder: encoderID(), ChunkSize: opts.ChunkSize, CompressMin: opts.CompressMin, Files: []memoFile{}},
	}
	m := Manifest{
		SchemaVersion: 2,
		MediaType:     registry.ManifestMediaType,
		ArtifactType:  registry.ArtifactType,
		Annotations:   map[string]string{},
	}
	maps.Copy(m.Annotations, opts.Annotations)
	if opts.Name != "" {
		m.Annotations[AnnotationTemplate] = opts.Name
	}
	if !opts.Created.IsZero() {
		m.Annotations[AnnotationCreated] = opts.Created.UTC().Format(time.RFC3339)
	}
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	for _, pf := range pk.files {
		if pf.reused {
			p.Reused = append(p.Reused, pf.file.Name)
		}
		if pf.memo != nil {
			p.memo.Files = append(p.memo.Files, *pf.memo)
		}
		p.Config.Files = append(p.Config.Files, pf.file)
		for j := range pf.file.Chunks {
			l := pf.layers[j]
			zstd := l.MediaType == registry.LayerZstdMediaType
			m.Layers = append(m.Layers, Descriptor{
				MediaType:   l.MediaType,
				Digest:      l.Digest,
				Size:        l.Size,
				Annotations: layerAnnotations(&pf.file, &pf.file.Chunks[j], zstd),
			})
			if _, ok := p.blobFile[l.Digest]; !ok {
				p.blobFile[l.Digest] = pf.file.Name
				p.Blobs = append(p.Blobs, l.Blob())
			}
		}
	}

	if p.ConfigBytes, err = json.Marshal(&p.Config); err != nil {
		return nil, fmt.Errorf("pack: config: %w", err)
	}
	// Decode what we wrote, so a pack that a pull would refuse (too big,
	// bad metadata) fails here and not at the far end.
	if _, err := DecodeConfig(p.ConfigBytes); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	p.ConfigDesc = registry.Descriptor{MediaType: registry.ConfigMediaType, Digest: digestOf(p.ConfigBytes), Size: int64(len(p.ConfigBytes))}
	m.Config = Descriptor{MediaType: p.ConfigDesc.MediaType, Digest: p.ConfigDesc.Digest, Size: p.ConfigDesc.Size}
	if p.Manifest, err = json.Marshal(&m); err != nil {
		return nil, fmt.Errorf("pack: manifest: %w", err)
	}
	dm, err := DecodeManifest(p.Manifest)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if _, err := checkLayers(dm, &p.Config); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	p.ManifestDesc = registry.Descriptor{MediaType: registry.ManifestMediaType, Digest: digestOf(p.Manifest), Size: int64(len(p.Manifest))}
	slog.Debug("artifact packed", "files", len(p.Config.Files), "reused", len(p.Reused), "layers", len(m.Layers), "blobs", len(p.Blobs), "manifest", p.ManifestDesc.Digest)
	return p, nil
}

// layer is a spooled blob.
type layer = Descriptor

type packedFile struct {
	file   File
	layers []layer
	memo   *memoFile // nil: not to be remembered
	reused bool      // taken from the memo
}

type packer struct {
	blobs  string // finished blobs: <hex>
	tmp    string // blobs being written, before they have a name
	shared bool   // blobs is a cache that pulls and other packs use too
	opts   *PackOptions
	prog   *progress
	prior  map[string]memoFile // the memo given, by file name
	seed   maphash.Seed
	mu     sync.Mutex
	zero   *layer // the blob of an all-zero chunk, once made
	files  []packedFile
}

func (pk *packer) packFile(ctx context.Context, in Input) (packedFile, error) {
	f, err := os.Open(in.Path)
	if err != nil {
		return packedFile{}, err
	}
	defer f.Close()
	lookedAt := time.Now()
	before, err := f.Stat()
	if err != nil {
		return packedFile{}, err
	}
	if !before.Mode().IsRegular() {
		return packedFile{}, errors.New("not a regular file")
	}
	size := before.Size()
	mode := in.Mode
	if mode == 0 {
		mode = modeOf(before.Mode().Perm())
	}
	compress := size > pk.opts.CompressMin
	enc, err := newEncoder()
	if err != nil {
		return packedFile{}, err
	}
	defer enc.Close()

	pf := packedFile{file: File{Name: in.Name, Size: size, Mode: mode, Chunks: []Chunk{}}}
	whole := sha256.New()
	for off, i := int64(0), 0; off < size; off, i = off+pk.opts.ChunkSize, i+1 {
		if err := ctx.Err(); err != nil {
			return packedFile{}, err
		}
		n := min(pk.opts.ChunkSize, size-off)
		var l layer
		var data [][2]int64
		if compress && isHole(f, off, n) {
			if err := writeZeros(whole, n); err != nil {
				return packedFile{}, err
			}
			l, data, err = pk.zeroLayer(ctx, enc)
		} else {
			l, data, err = pk.packChunk(ctx, enc, f, off, n, compress, whole)
		}
		if err != nil {
			return packedFile{}, fmt.Errorf("chunk %d: %w", i, err)
		}
		pf.file.Chunks = append(pf.file.Chunks, Chunk{Index: i, Offset: off, Size: n, Digest: l.Digest, Data: data})
		pf.layers = append(pf.layers, l)
		pk.prog.add(in.Name, n)
	}
	after, err := f.Stat()
	if err != nil {
		return packedFile{}, err
	}
	if after.Size() != size || !after.ModTime().Equal(before.ModTime()) {
		return packedFile{}, errors.New("file changed while being packed")
	}
	pf.file.SHA256 = hex.EncodeToString(whole.Sum(nil))
	if pk.shared {
		pf.memo = memoEntry(in, before, after, lookedAt, &pf)
	}
	return pf, nil
}

// zeroLayer is the blob of an all-zero chunk of any size: no data
// extents, so an empty compressed stream, made once. A chunk of real zeros
// scans to the very same blob.
func (pk *packer) zeroLayer(ctx context.Context, enc *zstd.Encoder) (layer, [][2]int64, error) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.zero != nil {
		return *pk.zero, [][2]int64{}, nil
	}
	l, data, err := pk.packChunk(ctx, enc, zeroReaderAt{}, 0, 0, true, io.Discard)
	if err != nil {
		return layer{}, nil, err
	}
	pk.zero = &l
	return l, data, nil
}

type zeroReaderAt struct{}

func (zeroReaderAt) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}

// Data extents: a chunk is looked at in ExtentBlock blocks (aligned on the
// chunk's start), and a run of all-zero blocks at either end, or of at
// least ExtentGap inside, is left out of the blob. Shorter inner runs stay
// in (zeros compress to nearly nothing), which bounds the extents per
// chunk.
const (
	ExtentBlock = 64 << 10
	ExtentGap   = 256 << 10
)

// extents builds a chunk's data extents and its data stream as the
// chunk's blocks go by.
type extents struct {
	data    io.Writer // the stream of data bytes
	ext     [][2]int64
	pos     int64 // in the chunk, of the next block
	zeroRun int64 // zero bytes since the last data block
}

func (e *extents) block(p []byte) error {
	n := int64(len(p))
	if bytes.Equal(p, zeros[:len(p)]) {
		e.zeroRun += n
		e.pos += n
		return nil
	}
	if k := len(e.ext); k > 0 && e.zeroRun < ExtentGap {
		if err := writeZeros(e.data, e.zeroRun); err != nil {
			return err
		}
		e.ext[k-1][1] += e.zeroRun + n
	} else {
		e.ext = append(e.ext, [2]int64{e.pos, n})
	}
	e.zeroRun = 0
	e.pos += n
	_, err := e.data.Write(p)
	return err
}

// packChunk stores [off, off+n) of src as one blob and returns it with
// the chunk's data extents, feeding every byte to whole on the way.
// Compressed chunks hold only their extents, compressed unless that saves
// less than 1/32; then they are read again and stored raw, checked against
// the first read. An uncompressed chunk is stored whole.
func (pk *packer) packChunk(ctx context.Context, enc *zstd.Encoder, src io.ReaderAt, off, n int64, compress bool, whole io.Writer) (layer, [][2]int64, error) {
	tmp, err := os.CreateTemp(pk.tmp, "chunk-")
	if err != nil {
		return layer{}, nil, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // gone already once committed
	}()
	if !compress {
		raw := sha256.New()
		if err := copyChunk(tmp, io.NewSectionReader(src, off, n), n, raw, whole); err != nil {
			return layer{}, nil, err
		}
		l, err := pk.commit(ctx, tmp, registry.LayerMediaType, raw, n)
		return l, [][2]int64{{0, n}}, err
	}

	// The first read is only checked against a second one, within this
	// process: maphash is enough for that and far cheaper than SHA-256.
	var check maphash.Hash
	check.SetSeed(pk.seed)
	stored := sha256.New()
	cw := &countWriter{}
	enc.Reset(io.MultiWriter(tmp, stored, cw))
	ex := &extents{data: io.MultiWriter(enc, &check), ext: [][2]int64{}}
	buf := make([]byte, 1<<20)
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		got, err := src.ReadAt(buf[:k], off+done)
		if int64(got) < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("file shrank while being packed")
			}
			return layer{}, nil, err
		}
		if _, err := whole.Write(buf[:k]); err != nil {
			return layer{}, nil, err
		}
		for b := int64(0); b < k; b += ExtentBlock {
			if err := ex.block(buf[b:min(k, b+ExtentBlock)]); err != nil {
				return layer{}, nil, err
			}
		}
		done += k
	}
	if err := enc.Close(); err != nil {
		return layer{}, nil, err
	}
	dn := int64(0)
	for _, e := range ex.ext {
		dn += e[1]
	}
	if dn == 0 || cw.n < dn-dn/32 {
		l, err := pk.commit(ctx, tmp, registry.LayerZstdMediaType, stored, cw.n)
		return l, ex.ext, err
	}

	first := check.Sum64()
	if err := tmp.Truncate(0); err != nil {
		return layer{}, nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return layer{}, nil, err
	}
	check.Reset()
	raw := sha256.New()
	if err := copyChunk(tmp, extentReader(src, off, ex.ext), dn, raw, &check); err != nil {
		return layer{}, nil, err
	}
	if check.Sum64() != first {
		return layer{}, nil, errors.New("file changed while being packed")
	}
	l, err := pk.commit(ctx, tmp, registry.LayerMediaType, raw, dn)
	return l, ex.ext, err
}

// extentReader reads a chunk's data extents back to back.
func extentReader(src io.ReaderAt, off int64, ext [][2]int64) io.Reader {
	rs := make([]io.Reader, len(ext))
	for i, e := range ext {
		rs[i] = io.NewSectionReader(src, off+e[0], e[1])
	}
	return io.MultiReader(rs...)
}

func copyChunk(dst io.Writer, src io.Reader, n int64, hashes ...io.Writer) error {
	w := io.MultiWriter(append([]io.Writer{dst}, hashes...)...)
	got, err := io.Copy(w, src)
	if err != nil {
		return err
	}
	if got != n {
		return errors.New("file shrank while being packed")
	}
	return nil
}

// commit moves a finished temp blob to its content address. In a spool,
// two workers committing the same content race harmlessly: the bytes are
// the same. In a shared cache the blob's lock is taken as Pull takes it,
// so a pull never removes or resumes a blob under a pack's feet. The new
// bytes replace any copy already there: they are known to be right, an
// old copy of the right size merely presumed so.
func (pk *packer) commit(ctx context.Context, tmp *os.File, mediaType string, h hash.Hash, size int64) (layer, error) {
	sum := hex.EncodeToString(h.Sum(nil))
	if err := tmp.Close(); err != nil {
		return layer{}, err
	}
	final := filepath.Join(pk.blobs, sum)
	if pk.shared {
		unlock, err := lockFile(ctx, final+".lock")
		if err != nil {
			return layer{}, fmt.Errorf("lock blob sha256:%s: %w", sum, err)
		}
		defer unlock()
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return layer{}, err
	}
	return layer{MediaType: mediaType, Digest: "sha256:" + sum, Size: size}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func countChunks(sizes []int64, chunk int64) int64 {
	var n int64
	for _, s := range sizes {
		n += (s + chunk - 1) / chunk
	}
	return n
}

// chunkSizeFor is the default chunk size for files of these sizes:
// DefaultChunkSize, doubled while that would make more than MaxChunks/2
// chunks. A function of the sizes alone, so packing stays deterministic.
func chunkSizeFor(sizes []int64) int64 {
	c := int64(DefaultChunkSize)
	for c < MaxChunkSize && countChunks(sizes, c) > MaxChunks/2 {
		c *= 2
	}
	return c
}

package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Limits on the JSON documents of a local OCI image; real ones are a few KiB.
const (
	maxOCIIndex    = 4 << 20
	maxOCIManifest = 4 << 20
	maxOCIConfig   = 16 << 20
	maxOCIArchive  = 1 << 16 // entries in an oci-archive tarball
)

// refNameAnnotation names an image inside an OCI layout.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// blobStore opens content-addressed blobs of an OCI layout, either a
// directory or a tarball of one.
type blobStore interface {
	open(name string) (io.ReadCloser, int64, error) // name relative to the layout root
	Close() error
}

// dirStore is an OCI layout directory.
type dirStore struct{ root string }

func (d dirStore) open(name string) (io.ReadCloser, int64, error) {
	f, err := os.Open(filepath.Join(d.root, filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", name)
	}
	return f, fi.Size(), nil
}

func (dirStore) Close() error { return nil }

// archiveStore is an OCI layout inside a tar file, read in place: one pass
// over the headers (seeking past contents) records where each file is.
type archiveStore struct {
	f     *os.File
	files map[string][2]int64 // clean name -> offset, size
}

func openArchiveStore(p string) (*archiveStore, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	a := &archiveStore{f: f, files: map[string][2]int64{}}
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		if n > maxOCIArchive {
			f.Close()
			return nil, fmt.Errorf("%s: more than %d entries", p, maxOCIArchive)
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		// archive/tar reads headers in whole blocks without buffering ahead,
		// so the file position is where this entry's content starts.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		a.files[path.Clean(strings.TrimPrefix(h.Name, "./"))] = [2]int64{off, h.Size}
	}
	return a, nil
}

func (a *archiveStore) open(name string) (io.ReadCloser, int64, error) {
	loc, ok := a.files[path.Clean(name)]
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", name, os.ErrNotExist)
	}
	return io.NopCloser(io.NewSectionReader(a.f, loc[0], loc[1])), loc[1], nil
}

func (a *archiveStore) Close() error { return a.f.Close() }

// readLimited reads all of rc up to max bytes.
func readLimited(rc io.ReadCloser, max int64, what string) ([]byte, error) {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s larger than %d bytes", what, max)
	}
	return b, nil
}

func blobName(h v1.Hash) (string, error) {
	if !sha256DigestRE.MatchString(h.String()) {
		return "", fmt.Errorf("unsupported digest %q (want sha256)", h.String())
	}
	return "blobs/sha256/" + h.Hex, nil
}

// readBlob reads a whole small blob and checks its digest.
func readBlob(s blobStore, h v1.Hash, max int64) ([]byte, error) {
	n, err := blobName(h)
	if err != nil {
		return nil, err
	}
	rc, _, err := s.open(n)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	b, err := readLimited(rc, max, "blob "+h.String())
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("blob %s: content does not match its digest", h)
	}
	return b, nil
}

// layoutCandidate is one image manifest found through index.json.
type layoutCandidate struct {
	desc   v1.Descriptor
	name   string // ref.name of the top-level entry it came from
	parent string // digest of the nested index it is listed in, if any
}

// selectLayoutImage picks the image a local reference names: by manifest
// digest (of the image, or of an index holding one for the guest), by
// ref.name, or the only image for the guest platform.
func selectLayoutImage(s blobStore, ref ociRef, arch string) (v1.Image, v1.Hash, error) {
	rc, _, err := s.open("index.json")
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("not an OCI layout (index.json): %w", err)
	}
	b, err := readLimited(rc, maxOCIIndex, "index.json")
	if err != nil {
		return nil, v1.Hash{}, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("index.json: %w", err)
	}
	var cands []layoutCandidate
	for _, d := range idx.Manifests {
		name := d.Annotations[refNameAnnotation]
		switch {
		case d.MediaType.IsImage():
			cands = append(cands, layoutCandidate{desc: d, name: name})
		case d.MediaType.IsIndex():
			nb, err := readBlob(s, d.Digest, maxOCIIndex)
			if err != nil {
				return nil, v1.Hash{}, err
			}
			var nested v1.IndexManifest
			if err := json.Unmarshal(nb, &nested); err != nil {
				return nil, v1.Hash{}, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			for _, nd := range nested.Manifests {
				if nd.MediaType.IsImage() {
					cands = append(cands, layoutCandidate{desc: nd, name: name, parent: d.Digest.String()})
				}
			}
		}
	}
	var picked []layoutCandidate
	seen := map[v1.Hash]bool{}
	for _, c := range cands {
		var ok bool
		switch {
		case ref.Digest != "":
			ok = c.desc.Digest.String() == ref.Digest || c.parent == ref.Digest && platformOK(c.desc.Platform, arch)
		case ref.Select != "":
			ok = c.name == ref.Select && platformOK(c.desc.Platform, arch)
		default:
			ok = platformOK(c.desc.Platform, arch)
		}
		if ok && !seen[c.desc.Digest] {
			seen[c.desc.Digest] = true
			picked = append(picked, c)
		}
	}
	if len(picked) != 1 {
		var names []string
		for _, c := range cands {
			names = append(names, fmt.Sprintf("%s (%s)", c.desc.Digest, dash0(c.name)))
		}
		sort.Strings(names)
		what := "an image for linux/" + arch
		if ref.Select != "" {
			what = fmt.Sprintf("image %q for linux/%s", ref.Select, arch)
		} else if ref.Digest != "" {
			what = "manifest " + ref.Digest
		}
		if len(picked) == 0 {
			return nil, v1.Hash{}, fmt.Errorf("no %s in the layout; it has: %s", what, strings.Join(names, ", "))
		}
		return nil, v1.Hash{}, fmt.Errorf("%d images match; name one (PATH:NAME or PATH@sha256:...): %s", len(picked), strings.Join(names, ", "))
	}
	d := picked[0].desc
	raw, err := readBlob(s, d.Digest, maxOCIManifest)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	img, err := newBlobImage(s, raw, d.MediaType)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	return img, d.Digest, nil
}

func dash0(s string) string {
	if s == "" {
		return "unnamed"
	}
	return s
}

// platformOK accepts descriptors without a platform and linux/arch ones.
func platformOK(p *v1.Platform, arch string) bool {
	return p == nil || (p.OS == "linux" || p.OS == "") && (p.Architecture == arch || p.Architecture == "")
}

// blobImage is a v1.Image over a blobStore and a verified raw manifest.
type blobImage struct {
	s         blobStore
	raw       []byte
	m         *v1.Manifest
	mediaType types.MediaType
}

func newBlobImage(s blobStore, raw []byte, mt types.MediaType) (v1.Image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if mt == "" {
		mt = m.MediaType
	}
	return partial.CompressedToImage(&blobImage{s: s, raw: raw, m: m, mediaType: mt})
}

func (b *blobImage) MediaType() (types.MediaType, error) { return b.mediaType, nil }
func (b *blobImage) RawManifest() ([]byte, error)        { return b.raw, nil }
func (b *blobImage) RawConfigFile() ([]byte, error) {
	return readBlob(b.s, b.m.Config.Digest, maxOCIConfig)
}

func (b *blobImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range b.m.Layers {
		if l.Digest == h {
			return &blobLayer{s: b.s, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("layer %s is not in the manifest", h)
}

// blobLayer is one compressed layer; reading it checks its digest.
type blobLayer struct {
	s    blobStore
	desc v1.Descriptor
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	n, err := blobName(l.desc.Digest)
	if err != nil {
		return nil, err
	}
	rc, _, err := l.s.open(n)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.desc.Digest, err)
	}
	return &verifyingReader{rc: rc, h: sha256.New(), want: l.desc.Digest.Hex, what: "layer " + l.desc.Digest.String()}, nil
}

// verifyingReader fails the read that reaches EOF when the content's
// SHA-256 is not want.
type verifyingReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want string
	what string
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) && hex.EncodeToString(v.h.Sum(nil)) != v.want {
		return n, fmt.Errorf("%s: content does not match its digest", v.what)
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

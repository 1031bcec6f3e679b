package regtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/mvm-dev/mvm/internal/registry"
)

// MemStore is a registry.Store in memory, for unit tests that need a store
// but not a server. Like a registry it refuses a blob whose bytes do not
// match its descriptor, honours GetBlob's offset, and wraps
// registry.ErrNotFound for what it lacks. Safe for concurrent use.
type MemStore struct {
	name      string
	mu        sync.Mutex
	blobs     map[string][]byte
	manifests map[string]memManifest // by digest
	tags      map[string]string      // tag → digest
	putBlobs  int
}

type memManifest struct {
	mediaType string
	b         []byte
}

var _ registry.Store = (*MemStore)(nil)

// NewMemStore returns an empty store; name shows in String and errors.
func NewMemStore(name string) *MemStore {
	return &MemStore{
		name:      name,
		blobs:     map[string][]byte{},
		manifests: map[string]memManifest{},
		tags:      map[string]string{},
	}
}

func (m *MemStore) String() string { return "mem://" + m.name }

// PutBlobCalls counts PutBlob calls, including refused ones, so tests can
// check that present blobs are not uploaded again.
func (m *MemStore) PutBlobCalls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.putBlobs
}

// BlobCount is the number of blobs stored.
func (m *MemStore) BlobCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blobs)
}

func (m *MemStore) HasBlob(ctx context.Context, digest string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.blobs[digest]
	return ok, nil
}

func (m *MemStore) PutBlob(ctx context.Context, d registry.Descriptor, r io.Reader) error {
	m.mu.Lock()
	m.putBlobs++
	m.mu.Unlock()
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s: put blob %s: %w", m, d.Digest, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if int64(len(b)) != d.Size {
		return fmt.Errorf("%s: put blob %s: %d bytes, descriptor says %d", m, d.Digest, len(b), d.Size)
	}
	if got := digestOf(b); got != d.Digest {
		return fmt.Errorf("%s: put blob %s: content hashes to %s", m, d.Digest, got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[d.Digest] = b
	return nil
}

func (m *MemStore) GetBlob(ctx context.Context, d registry.Descriptor, offset int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	b, ok := m.blobs[d.Digest]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s: blob %s: %w", m, d.Digest, registry.ErrNotFound)
	}
	if offset < 0 || offset > int64(len(b)) || offset > d.Size {
		return nil, fmt.Errorf("%s: blob %s: offset %d outside its %d bytes", m, d.Digest, offset, len(b))
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), nil
}

func (m *MemStore) PutManifest(ctx context.Context, tag string, mediaType string, b []byte) (registry.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return registry.Descriptor{}, err
	}
	if mediaType == "" {
		mediaType = registry.ManifestMediaType
	}
	if strings.ContainsAny(tag, ":/@") {
		return registry.Descriptor{}, fmt.Errorf("%s: tag %q: not a tag", m, tag)
	}
	d := registry.Descriptor{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.manifests[d.Digest] = memManifest{mediaType: mediaType, b: bytes.Clone(b)}
	if tag != "" {
		m.tags[tag] = d.Digest
	}
	return d, nil
}

func (m *MemStore) GetManifest(ctx context.Context, ref string) ([]byte, registry.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return nil, registry.Descriptor{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dg := ref
	if !strings.HasPrefix(ref, "sha256:") {
		dg = m.tags[ref]
	}
	mf, ok := m.manifests[dg]
	if !ok {
		return nil, registry.Descriptor{}, fmt.Errorf("%s: manifest %s: %w", m, ref, registry.ErrNotFound)
	}
	return bytes.Clone(mf.b), registry.Descriptor{MediaType: mf.mediaType, Digest: dg, Size: int64(len(mf.b))}, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

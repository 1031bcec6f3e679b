package artifact

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

// spyStore wraps a store, records the blob reads asked of it, and can
// serve bytes other than the stored ones, the way a compromised or broken
// server would.
type spyStore struct {
	registry.Store
	mu        sync.Mutex
	gets      int
	offsets   []int64
	blobs     map[string][]byte // digest → bytes served instead
	manifests map[string][]byte // ref → bytes served instead
}

func newSpy(s registry.Store) *spyStore {
	return &spyStore{Store: s, blobs: map[string][]byte{}, manifests: map[string][]byte{}}
}

// newMemStore is an in-memory store with a spy in front.
func newMemStore() *spyStore { return newSpy(regtest.NewMemStore("artifact-test")) }

func (s *spyStore) GetBlob(ctx context.Context, d registry.Descriptor, offset int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets++
	s.offsets = append(s.offsets, offset)
	b, ok := s.blobs[d.Digest]
	s.mu.Unlock()
	if ok {
		return io.NopCloser(bytes.NewReader(b[min(offset, int64(len(b))):])), nil
	}
	return s.Store.GetBlob(ctx, d, offset)
}

func (s *spyStore) GetManifest(ctx context.Context, ref string) ([]byte, registry.Descriptor, error) {
	s.mu.Lock()
	b, ok := s.manifests[ref]
	s.mu.Unlock()
	if ok {
		// Claim the digest asked for, as a lying server would.
		d := registry.Descriptor{MediaType: registry.ManifestMediaType, Digest: ref, Size: int64(len(b))}
		return bytes.Clone(b), d, nil
	}
	return s.Store.GetManifest(ctx, ref)
}

// blob reads a stored blob whole.
func (s *spyStore) blob(d registry.Descriptor) []byte {
	rc, err := s.Store.GetBlob(context.Background(), d, 0)
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		panic(err)
	}
	return b
}

func (s *spyStore) serveBlob(digest string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[digest] = b
}

func (s *spyStore) serveManifest(ref string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifests[ref] = b
}

func (s *spyStore) puts() int { return s.Store.(*regtest.MemStore).PutBlobCalls() }

func (s *spyStore) reads() (gets int, offsets []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets, append([]int64(nil), s.offsets...)
}

func (s *spyStore) resetReads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets, s.offsets = 0, nil
}

var errInjected = errors.New("injected failure")

// failAfter passes blob reads through until budget bytes have been served
// in all, then fails every read, like a connection that drops.
type failAfter struct {
	registry.Store
	mu     sync.Mutex
	budget int64
}

func (f *failAfter) GetBlob(ctx context.Context, d registry.Descriptor, offset int64) (io.ReadCloser, error) {
	rc, err := f.Store.GetBlob(ctx, d, offset)
	if err != nil {
		return nil, err
	}
	return &failingReader{rc: rc, f: f}, nil
}

type failingReader struct {
	rc io.ReadCloser
	f  *failAfter
}

func (r *failingReader) Read(p []byte) (int, error) {
	r.f.mu.Lock()
	left := r.f.budget
	r.f.mu.Unlock()
	if left <= 0 {
		return 0, errInjected
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := r.rc.Read(p)
	r.f.mu.Lock()
	r.f.budget -= int64(n)
	r.f.mu.Unlock()
	return n, err
}

func (r *failingReader) Close() error { return r.rc.Close() }

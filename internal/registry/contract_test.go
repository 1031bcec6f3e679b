package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func desc(mediaType string, b []byte) registry.Descriptor {
	sum := sha256.Sum256(b)
	return registry.Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func putBlob(t *testing.T, s registry.Store, mediaType string, b []byte) registry.Descriptor {
	t.Helper()
	d := desc(mediaType, b)
	if err := s.PutBlob(ctxT(t), d, bytes.NewReader(b)); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	return d
}

func readBlob(t *testing.T, s registry.Store, d registry.Descriptor, offset int64) []byte {
	t.Helper()
	rc, err := s.GetBlob(ctxT(t), d, offset)
	if err != nil {
		t.Fatalf("GetBlob(offset %d): %v", offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("GetBlob(offset %d): read: %v", offset, err)
	}
	return b
}

// ociManifest is the shape of what internal/artifact pushes: an OCI 1.1
// image manifest with artifactType and, for signatures, a subject.
type ociManifest struct {
	SchemaVersion int                   `json:"schemaVersion"`
	MediaType     string                `json:"mediaType"`
	ArtifactType  string                `json:"artifactType"`
	Config        registry.Descriptor   `json:"config"`
	Layers        []registry.Descriptor `json:"layers"`
	Subject       *registry.Descriptor  `json:"subject,omitempty"`
	Annotations   map[string]string     `json:"annotations,omitempty"`
}

// pushTemplate uploads a config and one layer and returns the bytes of a
// template manifest naming them (registries check the blobs exist).
func pushTemplate(t *testing.T, s registry.Store, seed uint64) ([]byte, registry.Descriptor) {
	t.Helper()
	cfg := putBlob(t, s, registry.ConfigMediaType, fmt.Appendf(nil, `{"name":"web","seed":%d}`, seed))
	layer := putBlob(t, s, registry.LayerMediaType, randBytes(4096, seed))
	b, err := json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     registry.ManifestMediaType,
		ArtifactType:  registry.ArtifactType,
		Config:        cfg,
		Layers:        []registry.Descriptor{layer},
		Annotations:   map[string]string{"org.opencontainers.image.title": "web"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, layer
}

// pushSignature stores a signature manifest for subject under
// SignatureTag, the way internal/artifact does.
func pushSignature(t *testing.T, s registry.Store, subject registry.Descriptor) ([]byte, registry.Descriptor) {
	t.Helper()
	empty := putBlob(t, s, "application/vnd.oci.empty.v1+json", []byte("{}"))
	env := putBlob(t, s, registry.SignatureMediaType, []byte(`{"sig":"c2ln"}`))
	b, err := json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     registry.ManifestMediaType,
		ArtifactType:  registry.SignatureArtifactType,
		Config:        empty,
		Layers:        []registry.Descriptor{env},
		Subject:       &subject,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.PutManifest(ctxT(t), registry.SignatureTag(subject.Digest), registry.ManifestMediaType, b)
	if err != nil {
		t.Fatalf("PutManifest(signature): %v", err)
	}
	return b, d
}

// testContract runs the Store contract against one implementation.
func testContract(t *testing.T, open func(t *testing.T) registry.Store) {
	t.Run("blob round trip", func(t *testing.T) {
		s := open(t)
		b := randBytes(3<<20+17, 1)
		d := desc(registry.LayerMediaType, b)
		if ok, err := s.HasBlob(ctxT(t), d.Digest); err != nil || ok {
			t.Fatalf("HasBlob before push = %v, %v; want false, nil", ok, err)
		}
		putBlob(t, s, d.MediaType, b)
		if ok, err := s.HasBlob(ctxT(t), d.Digest); err != nil || !ok {
			t.Fatalf("HasBlob after push = %v, %v; want true, nil", ok, err)
		}
		if got := readBlob(t, s, d, 0); !bytes.Equal(got, b) {
			t.Fatalf("GetBlob: %d bytes back, want the %d pushed", len(got), len(b))
		}
		// Pushing what is there already is fine (pushes race).
		putBlob(t, s, d.MediaType, b)
	})

	t.Run("empty blob", func(t *testing.T) {
		s := open(t)
		d := putBlob(t, s, registry.LayerMediaType, nil)
		if ok, err := s.HasBlob(ctxT(t), d.Digest); err != nil || !ok {
			t.Fatalf("HasBlob(empty) = %v, %v; want true, nil", ok, err)
		}
		if got := readBlob(t, s, d, 0); len(got) != 0 {
			t.Errorf("GetBlob(empty) = %d bytes", len(got))
		}
	})

	t.Run("resumed GetBlob", func(t *testing.T) {
		s := open(t)
		b := randBytes(1<<20+3, 2)
		d := putBlob(t, s, registry.LayerMediaType, b)
		for _, off := range []int64{1, 4096, int64(len(b)) / 2, int64(len(b)) - 1, int64(len(b))} {
			if got := readBlob(t, s, d, off); !bytes.Equal(got, b[off:]) {
				t.Errorf("GetBlob(offset %d): %d bytes, want %d matching", off, len(got), len(b)-int(off))
			}
		}
		for _, off := range []int64{-1, int64(len(b)) + 1} {
			if rc, err := s.GetBlob(ctxT(t), d, off); err == nil {
				rc.Close()
				t.Errorf("GetBlob(offset %d) succeeded; want an error", off)
			}
		}
	})

	t.Run("unknown blob", func(t *testing.T) {
		s := open(t)
		d := desc(registry.LayerMediaType, []byte("never pushed"))
		if rc, err := s.GetBlob(ctxT(t), d, 0); !errors.Is(err, registry.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("GetBlob(unknown) = %v; want ErrNotFound", err)
		}
		if rc, err := s.GetBlob(ctxT(t), d, 3); !errors.Is(err, registry.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("GetBlob(unknown, offset 3) = %v; want ErrNotFound", err)
		}
	})

	t.Run("wrong digest refused", func(t *testing.T) {
		s := open(t)
		b := randBytes(1000, 3)
		real := desc(registry.LayerMediaType, b)
		for _, c := range []struct {
			name string
			d    registry.Descriptor
		}{
			{"other digest", registry.Descriptor{MediaType: real.MediaType, Digest: desc("", []byte("other")).Digest, Size: real.Size}},
			{"size too big", registry.Descriptor{MediaType: real.MediaType, Digest: real.Digest, Size: real.Size + 1}},
			{"size too small", registry.Descriptor{MediaType: real.MediaType, Digest: real.Digest, Size: real.Size - 1}},
		} {
			if err := s.PutBlob(ctxT(t), c.d, bytes.NewReader(b)); err == nil {
				t.Errorf("PutBlob with %s succeeded", c.name)
			}
			if ok, err := s.HasBlob(ctxT(t), c.d.Digest); err != nil || ok {
				t.Errorf("after PutBlob with %s: HasBlob = %v, %v; want false, nil", c.name, ok, err)
			}
		}
	})

	t.Run("manifest by tag and digest", func(t *testing.T) {
		s := open(t)
		m, _ := pushTemplate(t, s, 4)
		d, err := s.PutManifest(ctxT(t), "v1", registry.ManifestMediaType, m)
		if err != nil {
			t.Fatalf("PutManifest: %v", err)
		}
		if want := desc(registry.ManifestMediaType, m); d != want {
			t.Fatalf("PutManifest descriptor = %+v; want %+v", d, want)
		}
		for _, ref := range []string{"v1", d.Digest} {
			b, got, err := s.GetManifest(ctxT(t), ref)
			if err != nil {
				t.Fatalf("GetManifest(%s): %v", ref, err)
			}
			if !bytes.Equal(b, m) || got != d {
				t.Errorf("GetManifest(%s) = %d bytes %+v; want the pushed %d bytes %+v", ref, len(b), got, len(m), d)
			}
		}
		// Retagging moves the tag.
		m2, _ := pushTemplate(t, s, 5)
		d2, err := s.PutManifest(ctxT(t), "v1", registry.ManifestMediaType, m2)
		if err != nil {
			t.Fatal(err)
		}
		if _, got, err := s.GetManifest(ctxT(t), "v1"); err != nil || got.Digest != d2.Digest {
			t.Errorf("after retag GetManifest(v1) = %v, %v; want %s", got.Digest, err, d2.Digest)
		}
		if b, _, err := s.GetManifest(ctxT(t), d.Digest); err != nil || !bytes.Equal(b, m) {
			t.Errorf("old manifest by digest after retag: %v", err)
		}
		// By digest only.
		m3, _ := pushTemplate(t, s, 6)
		d3, err := s.PutManifest(ctxT(t), "", registry.ManifestMediaType, m3)
		if err != nil {
			t.Fatalf("PutManifest without tag: %v", err)
		}
		if b, _, err := s.GetManifest(ctxT(t), d3.Digest); err != nil || !bytes.Equal(b, m3) {
			t.Errorf("untagged manifest by digest: %v", err)
		}
	})

	t.Run("signature with subject", func(t *testing.T) {
		s := open(t)
		m, _ := pushTemplate(t, s, 7)
		d, err := s.PutManifest(ctxT(t), "signed", registry.ManifestMediaType, m)
		if err != nil {
			t.Fatal(err)
		}
		sig, sd := pushSignature(t, s, d)
		b, got, err := s.GetManifest(ctxT(t), registry.SignatureTag(d.Digest))
		if err != nil {
			t.Fatalf("GetManifest(signature tag): %v", err)
		}
		if !bytes.Equal(b, sig) || got.Digest != sd.Digest {
			t.Errorf("signature manifest came back changed")
		}
		var back ociManifest
		if err := json.Unmarshal(b, &back); err != nil || back.Subject == nil || back.Subject.Digest != d.Digest || back.ArtifactType != registry.SignatureArtifactType {
			t.Errorf("signature manifest = %s; want subject %s and artifactType", b, d.Digest)
		}
	})

	t.Run("unknown manifest", func(t *testing.T) {
		s := open(t)
		for _, ref := range []string{"nope", desc("", []byte("x")).Digest} {
			if _, _, err := s.GetManifest(ctxT(t), ref); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("GetManifest(%s) = %v; want ErrNotFound", ref, err)
			}
		}
	})
}

func TestMemStoreContract(t *testing.T) {
	testContract(t, func(t *testing.T) registry.Store { return regtest.NewMemStore(t.Name()) })
}

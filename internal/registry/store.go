// Package registry moves template artifacts to and from the places people
// already run: OCI distribution registries and S3-compatible object stores.
// Both are content-addressed blob stores with named manifests, which is all
// the artifact layer (internal/artifact) needs; this package hides the
// protocol of each behind Store.
package registry

import (
	"context"
	"errors"
	"io"
	"strings"
)

// Media and artifact types of what we store. They are ours, versioned, and
// readable by any OCI 1.1 client (oras, crane).
const (
	// ArtifactType marks a template manifest (OCI 1.1 artifactType).
	ArtifactType = "application/vnd.mvm.template.v1"
	// ConfigMediaType is the template's config blob (JSON, artifact.Config).
	ConfigMediaType = "application/vnd.mvm.template.config.v1+json"
	// LayerMediaType is one chunk of one file, stored as is.
	LayerMediaType = "application/vnd.mvm.template.file.v1"
	// LayerZstdMediaType is one chunk of one file, zstd-compressed.
	LayerZstdMediaType = "application/vnd.mvm.template.file.v1+zstd"
	// SignatureArtifactType marks a signature manifest whose subject is the
	// signed template manifest.
	SignatureArtifactType = "application/vnd.mvm.signature.v1"
	// SignatureMediaType is the signature envelope blob (JSON, sign.Envelope).
	SignatureMediaType = "application/vnd.mvm.signature.v1+json"
	// ManifestMediaType is the manifest format for both.
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"
)

// Descriptor names one blob or manifest (the OCI descriptor's core).
type Descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"` // "sha256:<hex>"
	Size      int64  `json:"size"`
}

// Errors every Store maps its protocol's failures onto, so callers (and
// users) get the same message from a registry and a bucket.
var (
	ErrNotFound     = errors.New("not found")
	ErrUnauthorized = errors.New("credentials refused")
	ErrUnavailable  = errors.New("store unreachable")
)

// Store is one repository of an OCI registry (host/name) or one prefix of a
// bucket (s3://bucket/prefix). Methods take a context and return errors that
// wrap the ones above where they apply, with the store's address in the text.
type Store interface {
	// String is the store's address for messages ("localhost:5000/tpl/web").
	String() string

	// HasBlob reports whether a blob is present. A missing blob is
	// (false, nil), not ErrNotFound.
	HasBlob(ctx context.Context, digest string) (bool, error)
	// PutBlob uploads a blob whose digest and size the caller computed;
	// the store verifies the digest server-side where the protocol does.
	PutBlob(ctx context.Context, d Descriptor, r io.Reader) error
	// GetBlob streams a blob from byte offset (for resumed pulls), which
	// must lie in [0, d.Size]; offset d.Size gives an empty stream once the
	// blob is known to exist. The caller checks the digest of what it read.
	GetBlob(ctx context.Context, d Descriptor, offset int64) (io.ReadCloser, error)

	// PutManifest stores manifest bytes verbatim under tag (and by
	// digest); an empty tag stores them by digest only.
	PutManifest(ctx context.Context, tag string, mediaType string, b []byte) (Descriptor, error)
	// GetManifest reads the manifest a tag or "sha256:..." digest names.
	// The caller checks the digest of the bytes when it asked by digest.
	GetManifest(ctx context.Context, ref string) ([]byte, Descriptor, error)
}

// SignatureTag is the tag a signature manifest is stored under: the signed
// manifest's digest with ':' turned into '-' and ".sig" added (the cosign
// convention), so a plain tag lookup finds it on any registry or bucket,
// whether or not the server implements the OCI 1.1 referrers API.
func SignatureTag(manifestDigest string) string {
	return strings.Replace(manifestDigest, ":", "-", 1) + ".sig"
}

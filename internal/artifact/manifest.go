package artifact

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/registry"
)

// Manifest is the OCI image manifest of a template artifact, in the field
// order Pack writes it.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Descriptor is an OCI descriptor with the annotations registry.Descriptor
// leaves out.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Blob is d as the store names it.
func (d Descriptor) Blob() registry.Descriptor {
	return registry.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

const (
	maxAnnotations   = 64
	maxAnnotationKey = 256
	maxAnnotationVal = 4096
)

// DecodeManifest parses and validates manifest bytes read from a store,
// accepting only the exact encoding Pack writes. It checks the manifest on
// its own; Pull also checks it against the config (see checkLayers).
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, more than %d", ErrInvalid, len(b), MaxManifestSize)
	}
	var m Manifest
	if err := decodeCanonical(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	switch {
	case m.SchemaVersion != 2:
		return bad("schemaVersion %d, want 2", m.SchemaVersion)
	case m.MediaType != registry.ManifestMediaType:
		return bad("mediaType %q, want %s", clip(m.MediaType), registry.ManifestMediaType)
	case m.ArtifactType != registry.ArtifactType:
		return bad("artifactType %q, want %s (not a template)", clip(m.ArtifactType), registry.ArtifactType)
	case m.Config.MediaType != registry.ConfigMediaType:
		return bad("config mediaType %q, want %s", clip(m.Config.MediaType), registry.ConfigMediaType)
	case m.Config.Size <= 0 || m.Config.Size > MaxConfigSize:
		return bad("config size %d out of range", m.Config.Size)
	case len(m.Config.Annotations) > 0:
		return bad("config has annotations")
	case len(m.Layers) == 0:
		return bad("no layers")
	case len(m.Layers) > MaxChunks:
		return bad("%d layers, more than %d", len(m.Layers), MaxChunks)
	}
	if _, err := digestHex(m.Config.Digest); err != nil {
		return fmt.Errorf("manifest: config: %w", err)
	}
	if err := validateAnnotations(m.Annotations); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	// One digest, one blob: layers sharing a digest must agree on the rest.
	seen := make(map[string]Descriptor, len(m.Layers))
	for i, l := range m.Layers {
		if l.MediaType != registry.LayerMediaType && l.MediaType != registry.LayerZstdMediaType {
			return bad("layer %d mediaType %q not ours", i, clip(l.MediaType))
		}
		if l.Size <= 0 || l.Size > MaxChunkSize {
			return bad("layer %d size %d out of range", i, l.Size)
		}
		if _, err := digestHex(l.Digest); err != nil {
			return fmt.Errorf("manifest: layer %d: %w", i, err)
		}
		if err := validateAnnotations(l.Annotations); err != nil {
			return fmt.Errorf("manifest: layer %d: %w", i, err)
		}
		if o, ok := seen[l.Digest]; ok && (o.MediaType != l.MediaType || o.Size != l.Size) {
			return bad("layer %d disagrees with an earlier layer of the same digest", i)
		}
		seen[l.Digest] = l
	}
	return nil
}

func validateAnnotations(a map[string]string) error {
	if len(a) > maxAnnotations {
		return fmt.Errorf("%w: more than %d annotations", ErrInvalid, maxAnnotations)
	}
	for k, v := range a {
		if k == "" || len(k) > maxAnnotationKey || len(v) > maxAnnotationVal {
			return fmt.Errorf("%w: annotation %q out of bounds", ErrInvalid, clip(k))
		}
	}
	return nil
}

// layerTitle names a chunk's layer for tools like oras, which write a layer
// to the file its title names: the chunks of a file sort in order, and
// each holds (zstd-compressed or not) its data extents back to back,
// placed by the config's Chunk.Data.
func layerTitle(name string, index int, zstd bool) string {
	t := name + "." + fmt.Sprintf("%04d", index)
	if zstd {
		t += ".zst"
	}
	return t
}

func layerAnnotations(f *File, c *Chunk, zstd bool) map[string]string {
	return map[string]string{
		AnnotationTitle:  layerTitle(f.Name, c.Index, zstd),
		AnnotationFile:   f.Name,
		AnnotationChunk:  strconv.Itoa(c.Index),
		AnnotationOffset: strconv.FormatInt(c.Offset, 10),
	}
}

// checkLayers checks that the manifest's layers are exactly the config's
// chunks, file by file and chunk by chunk, with matching digests,
// annotations and plausible sizes: a stored chunk is its raw bytes
// (LayerMediaType, same size) or a zstd stream Pack kept only because it
// was smaller. It returns, for each chunk, its layer.
// maxEmptyFrame bounds the zstd frame of no bytes (header and an empty
// last block, with its checksum: about a dozen bytes).
const maxEmptyFrame = 64

func checkLayers(m *Manifest, c *Config) ([][]Descriptor, error) {
	total := 0
	for _, f := range c.Files {
		total += len(f.Chunks)
	}
	if total != len(m.Layers) {
		return nil, fmt.Errorf("%w: manifest has %d layers, config %d chunks", ErrInvalid, len(m.Layers), total)
	}
	out := make([][]Descriptor, len(c.Files))
	k := 0
	for i := range c.Files {
		f := &c.Files[i]
		out[i] = make([]Descriptor, len(f.Chunks))
		for j := range f.Chunks {
			ch := &f.Chunks[j]
			l := m.Layers[k]
			k++
			bad := func(why string) error {
				return fmt.Errorf("%w: layer %d (file %s chunk %d): %s", ErrInvalid, k-1, f.Name, j, why)
			}
			if l.Digest != ch.Digest {
				return nil, bad("digest differs from the config's")
			}
			zstd := l.MediaType == registry.LayerZstdMediaType
			// A blob holds the chunk's data extents: raw, exactly; zstd, in
			// fewer bytes (or, for no data at all, one small empty frame).
			dn := ch.DataSize()
			if zstd && l.Size >= max(dn, maxEmptyFrame+1) || !zstd && l.Size != dn {
				return nil, bad(fmt.Sprintf("stored size %d implausible for %d bytes of data", l.Size, dn))
			}
			want := layerAnnotations(f, ch, zstd)
			if len(l.Annotations) != len(want) {
				return nil, bad("annotations differ from the config's")
			}
			for key, v := range want {
				if l.Annotations[key] != v {
					return nil, bad(fmt.Sprintf("annotation %s is %q, want %q", key, clip(l.Annotations[key]), v))
				}
			}
			out[i][j] = l
		}
	}
	return out, nil
}

// validTag reports whether s is an OCI distribution tag.
func validTag(s string) bool {
	if s == "" || len(s) > 128 || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "-") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

package artifact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ConfigVersion is the version of Config this package writes and reads.
// Version 2 added Chunk.Data: a chunk's blob holds only its data extents.
const ConfigVersion = 2

// MaxExtents bounds the data extents of one chunk (Pack makes at most one
// per ExtentGap+ExtentBlock of a chunk).
const MaxExtents = 8192

// Config is the artifact's config blob (registry.ConfigMediaType): what the
// files are and how their chunks map onto layers. It is the source of truth
// a pull rebuilds the files from; the manifest's layers must agree with it.
type Config struct {
	Version int `json:"version"`
	// Template is the caller's metadata, carried as is.
	Template json.RawMessage `json:"template,omitempty"`
	// Files are sorted by Name.
	Files []File `json:"files"`
}

// File is one file of the artifact.
type File struct {
	// Name is a slash-separated path relative to the artifact's root.
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Mode holds permission bits only: 0644, 0600 or 0444.
	Mode os.FileMode `json:"mode"`
	// SHA256 is the lowercase hex SHA-256 of the whole uncompressed file.
	SHA256 string  `json:"sha256"`
	Chunks []Chunk `json:"chunks"`
}

// Chunk is one contiguous piece of a file, stored as one layer.
type Chunk struct {
	Index  int   `json:"index"`
	Offset int64 `json:"offset"`
	// Size is the uncompressed length.
	Size int64 `json:"size"`
	// Digest is the layer blob's digest (of the stored, maybe compressed,
	// bytes).
	Digest string `json:"digest"`
	// Data are the chunk's data extents, [offset in the chunk, length],
	// ascending and apart: the blob holds their bytes back to back, and
	// every byte of the chunk outside them is zero. So a mostly empty
	// disk image neither compresses nor decompresses its zeros, and a
	// pull leaves them as holes without looking at them. An all-zero
	// chunk has none.
	Data [][2]int64 `json:"data"`
}

// DataSize is how many bytes the chunk's blob unpacks to.
func (c *Chunk) DataSize() int64 {
	var n int64
	for _, e := range c.Data {
		n += e[1]
	}
	return n
}

// whole says whether the chunk's blob is the chunk itself.
func (c *Chunk) whole() bool {
	return len(c.Data) == 1 && c.Data[0] == [2]int64{0, c.Size}
}

func (c *Chunk) validateData() error {
	if c.Data == nil {
		return errors.New("no data extents")
	}
	if len(c.Data) > MaxExtents {
		return fmt.Errorf("more than %d data extents", MaxExtents)
	}
	end := int64(-1)
	for i, e := range c.Data {
		switch {
		case e[1] <= 0:
			return fmt.Errorf("data extent %d is empty", i)
		case e[0] <= end:
			return fmt.Errorf("data extent %d at %d does not follow the last one apart", i, e[0])
		case e[0] > c.Size || e[1] > c.Size-e[0]:
			return fmt.Errorf("data extent %d runs past the chunk's end", i)
		}
		end = e[0] + e[1]
	}
	return nil
}

// allowedModes are the only modes a file may carry: nothing executable,
// nothing set-id, so a pulled template cannot plant either.
var allowedModes = map[os.FileMode]bool{0o644: true, 0o600: true, 0o444: true}

// DecodeConfig parses and validates config bytes read from a store. It
// accepts only the exact encoding Pack writes (no unknown fields, no
// duplicate or differently cased keys, no extra whitespace), so what a
// signer saw and what a pull uses cannot differ.
func DecodeConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%w: config is %d bytes, more than %d", ErrInvalid, len(b), MaxConfigSize)
	}
	var c Config
	if err := decodeCanonical(b, &c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the rules every config obeys: a known version, at least
// one file, safe distinct names in order, allowed modes, hashes in form,
// and chunks that tile each file exactly, within the package's bounds.
func (c *Config) Validate() error {
	if c.Version != ConfigVersion {
		return fmt.Errorf("%w: config version %d, want %d", ErrInvalid, c.Version, ConfigVersion)
	}
	if len(c.Template) > 0 && !json.Valid(c.Template) {
		return fmt.Errorf("%w: config template is not JSON", ErrInvalid)
	}
	if len(c.Files) == 0 {
		return fmt.Errorf("%w: config lists no files", ErrInvalid)
	}
	if len(c.Files) > MaxFiles {
		return fmt.Errorf("%w: config lists %d files, more than %d", ErrInvalid, len(c.Files), MaxFiles)
	}
	names := make([]string, len(c.Files))
	chunks := 0
	for i, f := range c.Files {
		names[i] = f.Name
		if err := f.validate(); err != nil {
			return err
		}
		chunks += len(f.Chunks)
		if chunks > MaxChunks {
			return fmt.Errorf("%w: config has more than %d chunks", ErrInvalid, MaxChunks)
		}
	}
	return validateNames(names)
}

func (f *File) validate() error {
	if err := ValidateName(f.Name); err != nil {
		return err
	}
	if f.Size < 0 || f.Size > MaxFileSize {
		return fmt.Errorf("%w: file %s: size %d out of range", ErrInvalid, f.Name, f.Size)
	}
	if !allowedModes[f.Mode] {
		return fmt.Errorf("%w: file %s: mode %#o not allowed (0644, 0600 or 0444)", ErrInvalid, f.Name, uint32(f.Mode))
	}
	if !isHex64(f.SHA256) {
		return fmt.Errorf("%w: file %s: bad sha256 %q", ErrInvalid, f.Name, clip(f.SHA256))
	}
	if len(f.Chunks) > MaxChunks {
		return fmt.Errorf("%w: file %s: more than %d chunks", ErrInvalid, f.Name, MaxChunks)
	}
	var off int64
	for i, c := range f.Chunks {
		switch {
		case c.Index != i:
			return fmt.Errorf("%w: file %s: chunk %d has index %d", ErrInvalid, f.Name, i, c.Index)
		case c.Offset != off:
			return fmt.Errorf("%w: file %s: chunk %d at offset %d, want %d", ErrInvalid, f.Name, i, c.Offset, off)
		case c.Size <= 0 || c.Size > MaxChunkSize:
			return fmt.Errorf("%w: file %s: chunk %d size %d out of range", ErrInvalid, f.Name, i, c.Size)
		case c.Size > f.Size-off:
			return fmt.Errorf("%w: file %s: chunk %d runs past the file's end", ErrInvalid, f.Name, i)
		}
		if _, err := digestHex(c.Digest); err != nil {
			return fmt.Errorf("file %s: chunk %d: %w", f.Name, i, err)
		}
		if err := c.validateData(); err != nil {
			return fmt.Errorf("%w: file %s: chunk %d: %w", ErrInvalid, f.Name, i, err)
		}
		off += c.Size
	}
	if off != f.Size {
		return fmt.Errorf("%w: file %s: chunks cover %d of %d bytes", ErrInvalid, f.Name, off, f.Size)
	}
	return nil
}

// ValidateName checks one artifact file name: a relative slash path of at
// most 255 bytes and 16 segments, each 1 to 128 bytes of [A-Za-z0-9._+-]
// and neither "." nor "..". Everything it accepts is safe to join under a
// directory on any filesystem we run on.
func ValidateName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: file name %q: %s", ErrInvalid, clip(name), why)
	}
	if name == "" {
		return bad("empty")
	}
	if len(name) > maxNameLen {
		return bad(fmt.Sprintf("longer than %d bytes", maxNameLen))
	}
	if name[0] == '/' {
		return bad("absolute")
	}
	segs := strings.Split(name, "/")
	if len(segs) > maxSegments {
		return bad(fmt.Sprintf("more than %d segments", maxSegments))
	}
	for _, s := range segs {
		switch {
		case s == "":
			return bad("empty segment")
		case s == "." || s == "..":
			return bad("dot segment")
		case len(s) > maxSegLen:
			return bad(fmt.Sprintf("segment longer than %d bytes", maxSegLen))
		}
		for i := 0; i < len(s); i++ {
			if !nameByte(s[i]) {
				return bad(fmt.Sprintf("byte %q not allowed", s[i]))
			}
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '+'
}

// validateNames checks a set of names for order and clashes: strictly
// ascending (so no duplicates and one canonical order), no two equal but for
// case (they would collide on a case-folding filesystem), and no name that
// is also another's directory.
func validateNames(names []string) error {
	folded := make(map[string]string, len(names))
	for i, n := range names {
		if i > 0 && n <= names[i-1] {
			if n == names[i-1] {
				return fmt.Errorf("%w: file %s listed twice", ErrInvalid, n)
			}
			return fmt.Errorf("%w: files not sorted by name (%s after %s)", ErrInvalid, n, names[i-1])
		}
		l := strings.ToLower(n)
		if o, ok := folded[l]; ok {
			return fmt.Errorf("%w: files %s and %s differ only in case", ErrInvalid, o, n)
		}
		folded[l] = n
	}
	for _, n := range names {
		for i := 0; i < len(n); i++ {
			if n[i] != '/' {
				continue
			}
			if o, ok := folded[strings.ToLower(n[:i])]; ok {
				return fmt.Errorf("%w: file %s is also the directory of %s", ErrInvalid, o, n)
			}
		}
	}
	return nil
}

// decodeCanonical decodes JSON strictly into v and then insists that v
// encodes back to exactly b. encoding/json alone tolerates duplicate keys
// (last wins) and matches keys case-insensitively; demanding the canonical
// form closes those gaps without a parser of our own.
func decodeCanonical(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	re, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !bytes.Equal(re, b) {
		return fmt.Errorf("%w: not in canonical form", ErrInvalid)
	}
	return nil
}

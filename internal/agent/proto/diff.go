package proto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// OpDiff lists the guest's filesystem so the host can compare it with the
// image it booted from. After the Response the agent streams one DiffEntry
// per line of JSON in TData frames, then TDataEOF, then TDone with a
// DiffResult. The walk stays on the root's filesystem (like find -xdev):
// /proc, /sys, /dev and other mounts show as their mount points only.

// Entry types of DiffEntry.Type.
const (
	DiffFile    = "f"
	DiffDir     = "d"
	DiffSymlink = "l"
	DiffChar    = "c"
	DiffBlock   = "b"
	DiffFIFO    = "p"
	DiffSocket  = "s"
)

// Limits of a diff request.
const (
	DefaultDiffHashLimit = 16 << 20 // bytes; larger files compare by size and mtime
	MaxDiffHashLimit     = 1 << 30
	MaxDiffExcludes      = 256
	// MaxDiffLine bounds one streamed entry; a longer line is an error.
	MaxDiffLine = 16 << 10
)

// DiffRequest is OpDiff's argument.
type DiffRequest struct {
	// Root is the absolute guest directory to list; default "/".
	Root string `json:"root,omitempty"`
	// Exclude are absolute guest paths not listed (nor anything below).
	Exclude []string `json:"exclude,omitempty"`
	// HashNewerThanNS: regular files modified after this time (Unix ns)
	// and no larger than HashLimit are hashed; older ones are assumed to
	// be the image's and compare by size and mtime. 0 hashes none.
	HashNewerThanNS int64 `json:"hash_newer_than_ns,omitempty"`
	HashLimit       int64 `json:"hash_limit,omitempty"` // default DefaultDiffHashLimit
}

// DiffEntry is one filesystem object. Keys are short: a root filesystem
// has tens of thousands of them.
type DiffEntry struct {
	Path    string `json:"p"` // absolute, cleaned
	Type    string `json:"t"` // one of the Diff* types
	Mode    uint32 `json:"m"` // permission bits plus setuid, setgid, sticky (07777)
	UID     int    `json:"u"`
	GID     int    `json:"g"`
	Size    int64  `json:"s,omitempty"`  // regular files and symlinks
	MtimeNS int64  `json:"mt,omitempty"` // Unix ns
	SHA256  string `json:"h,omitempty"`  // hex, regular files only, when hashed
	Link    string `json:"l,omitempty"`  // symlink target
	Rdev    uint64 `json:"r,omitempty"`  // device number of c and b
}

// DiffResult is the TDone payload of OpDiff.
type DiffResult struct {
	Entries int `json:"entries"`
	Hashed  int `json:"hashed"`
	// Errors are paths that could not be read (vanished while walking,
	// unreadable), "path: error", at most a few.
	Errors []string `json:"errors,omitempty"`
}

// Validate checks a request from the wire and fills in defaults.
func (r *DiffRequest) Validate() error {
	if r.Root == "" {
		r.Root = "/"
	}
	if !path.IsAbs(r.Root) || path.Clean(r.Root) != r.Root {
		return fmt.Errorf("root %q: want a clean absolute path", r.Root)
	}
	if len(r.Exclude) > MaxDiffExcludes {
		return fmt.Errorf("%d excludes, at most %d", len(r.Exclude), MaxDiffExcludes)
	}
	for _, e := range r.Exclude {
		if !path.IsAbs(e) || path.Clean(e) != e {
			return fmt.Errorf("exclude %q: want a clean absolute path", e)
		}
	}
	switch {
	case r.HashLimit == 0:
		r.HashLimit = DefaultDiffHashLimit
	case r.HashLimit < 0 || r.HashLimit > MaxDiffHashLimit:
		return fmt.Errorf("hash_limit %d: want 1..%d", r.HashLimit, MaxDiffHashLimit)
	}
	if r.HashNewerThanNS < 0 {
		return fmt.Errorf("hash_newer_than_ns %d is negative", r.HashNewerThanNS)
	}
	return nil
}

// ParseDiff decodes and validates OpDiff's args strictly.
func ParseDiff(b []byte) (DiffRequest, error) {
	var r DiffRequest
	if len(bytes.TrimSpace(b)) > 0 {
		if err := decodeStrict(b, &r); err != nil {
			return r, fmt.Errorf("diff args: %w", err)
		}
	}
	return r, r.Validate()
}

// Validate checks one entry from the wire.
func (e *DiffEntry) Validate() error {
	if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || strings.ContainsRune(e.Path, 0) {
		return fmt.Errorf("entry path %q: want a clean absolute path", e.Path)
	}
	switch e.Type {
	case DiffFile, DiffDir, DiffSymlink, DiffChar, DiffBlock, DiffFIFO, DiffSocket:
	default:
		return fmt.Errorf("entry %s: unknown type %q", e.Path, e.Type)
	}
	if e.Mode&^0o7777 != 0 {
		return fmt.Errorf("entry %s: mode %o has more than permission bits", e.Path, e.Mode)
	}
	if e.Size < 0 {
		return fmt.Errorf("entry %s: negative size", e.Path)
	}
	if e.SHA256 != "" && (len(e.SHA256) != 64 || strings.Trim(e.SHA256, "0123456789abcdef") != "") {
		return fmt.Errorf("entry %s: malformed sha256", e.Path)
	}
	return nil
}

// DiffEncoder writes entries as lines of JSON.
type DiffEncoder struct{ enc *json.Encoder }

// NewDiffEncoder returns an encoder writing to w.
func NewDiffEncoder(w io.Writer) *DiffEncoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &DiffEncoder{enc: enc}
}

// Encode writes one entry.
func (d *DiffEncoder) Encode(e DiffEntry) error { return d.enc.Encode(e) }

// ReadDiffEntries decodes lines of JSON entries from r (untrusted) and calls
// fn for each valid one, in order. It stops at the first malformed line.
func ReadDiffEntries(r io.Reader, fn func(DiffEntry) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readDiffLine(br)
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("diff entry %d: %w", n, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e DiffEntry
		if err := decodeStrict(line, &e); err != nil {
			return fmt.Errorf("diff entry %d: %w", n, err)
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("diff entry %d: %w", n, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// readDiffLine returns one line without its newline, refusing lines longer
// than MaxDiffLine before buffering them.
func readDiffLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxDiffLine+1 {
			return nil, fmt.Errorf("line longer than %d bytes", MaxDiffLine)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

package artifact

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/mvm-dev/mvm/internal/registry"
)

// A pack memo records, per input file, the version of the file Pack read
// (inode, size, mode, mtime, ctime) and what it made of it (the config's
// File entry and its chunks' blobs). Pack given the memo of an earlier
// pack takes an unchanged file from it instead of reading and compressing
// it again, provided its blobs are still in the blob cache. The memo is a
// speed-up only: anything doubtful about an entry makes Pack read the file.

// memoVersion changes whenever the same bytes could pack differently
// (chunk layout, encoder settings), so an old memo is ignored, not misread.
const memoVersion = 1

// memoRacyWindow: a file whose mtime or ctime is this close to the moment
// Pack looked at it is not memoized, because a write in the same tick of
// the filesystem's clock would leave both unchanged (git's "racily clean"
// problem). Linux's coarse timestamps tick in milliseconds; the margin
// covers filesystems with second-granular times.
var memoRacyWindow = 2 * time.Second

type packMemo struct {
	Version     int        `json:"version"`
	Encoder     string     `json:"encoder"`
	ChunkSize   int64      `json:"chunk_size"`
	CompressMin int64      `json:"compress_min"`
	Files       []memoFile `json:"files"`
}

type memoFile struct {
	Name      string      `json:"name"`
	Path      string      `json:"path"`
	InputMode os.FileMode `json:"input_mode"`
	ID        fileID      `json:"id"`
	File      File        `json:"file"`
	// Layers are the media type and stored size of each chunk's blob (the
	// digest is the chunk's).
	Layers []memoLayer `json:"layers"`
}

type memoLayer struct {
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
}

// fileID identifies one version of a file; see statID.
type fileID struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Mode  uint32 `json:"mode"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

// encoderID names the zstd library build that compressed the blobs: a new
// version may compress the same bytes differently, and a memo from the old
// one would then give other digests than a fresh pack.
func encoderID() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/klauspost/compress" {
				if m.Replace != nil {
					m = m.Replace
				}
				return m.Path + "@" + m.Version
			}
		}
	}
	return "unknown"
}

// MarshalMemo encodes what a later Pack (with the same BlobDir) needs to
// reuse this pack's work for files that have not changed. Files changed
// during the pack, or too recently to tell a later change apart, are left
// out. Only a pack into a BlobDir has a memo: spooled blobs do not last.
func (p *Packed) MarshalMemo() ([]byte, error) {
	if p.spool {
		return nil, errors.New("pack memo: the blobs are in a spool, not a blob cache")
	}
	return json.Marshal(&p.memo)
}

// loadMemo parses a memo for a pack with opts, keyed by file name; nil if
// it is unusable (corrupt, or made with other settings).
func loadMemo(b []byte, opts *PackOptions) map[string]memoFile {
	if len(b) == 0 {
		return nil
	}
	var m packMemo
	if err := json.Unmarshal(b, &m); err != nil {
		slog.Debug("artifact: ignoring unreadable pack memo", "err", err)
		return nil
	}
	if m.Version != memoVersion || m.Encoder != encoderID() || m.ChunkSize != opts.ChunkSize || m.CompressMin != opts.CompressMin {
		slog.Debug("artifact: ignoring pack memo made with other settings", "version", m.Version, "encoder", m.Encoder)
		return nil
	}
	out := make(map[string]memoFile, len(m.Files))
	for _, f := range m.Files {
		out[f.Name] = f
	}
	return out
}

// reuse returns the memo's result for in if the file on disk is the very
// version the memo describes and every blob it needs is in the cache
// (present, with its size; Push hashes each one it uploads).
func (pk *packer) reuse(in Input) (packedFile, bool) {
	mf, ok := pk.prior[in.Name]
	if !ok || mf.Path != in.Path || mf.InputMode != in.Mode {
		return packedFile{}, false
	}
	fi, err := os.Stat(in.Path)
	if err != nil {
		return packedFile{}, false
	}
	id, ok := statID(fi)
	if !ok || id != mf.ID {
		return packedFile{}, false
	}
	mode := in.Mode
	if mode == 0 {
		mode = modeOf(fi.Mode().Perm())
	}
	f := mf.File
	if f.Name != in.Name || f.Size != fi.Size() || f.Mode != mode || len(mf.Layers) != len(f.Chunks) || f.validate() != nil {
		return packedFile{}, false
	}
	pf := packedFile{file: f, memo: &mf, reused: true}
	for i, c := range f.Chunks {
		l := mf.Layers[i]
		if l.MediaType != registry.LayerMediaType && l.MediaType != registry.LayerZstdMediaType {
			return packedFile{}, false
		}
		h, err := digestHex(c.Digest)
		if err != nil || !cached(filepath.Join(pk.blobs, h), l.Size) {
			return packedFile{}, false
		}
		pf.layers = append(pf.layers, layer{MediaType: l.MediaType, Digest: c.Digest, Size: l.Size})
	}
	return pf, true
}

// memoEntry is the memo record of a file just packed, or nil if the file
// changed identity while it was read or changed too close to when it was
// looked at (see memoRacyWindow).
func memoEntry(in Input, before, after os.FileInfo, lookedAt time.Time, pf *packedFile) *memoFile {
	id, ok := statID(before)
	if !ok {
		return nil
	}
	if a, ok := statID(after); !ok || a != id {
		return nil
	}
	limit := lookedAt.Add(-memoRacyWindow).UnixNano()
	if id.Mtime >= limit || id.Ctime >= limit {
		return nil
	}
	mf := &memoFile{Name: in.Name, Path: in.Path, InputMode: in.Mode, ID: id, File: pf.file}
	for _, l := range pf.layers {
		mf.Layers = append(mf.Layers, memoLayer{MediaType: l.MediaType, Size: l.Size})
	}
	return mf
}

// cleanTemps removes blob temp files a killed pack left in dir. A live
// pack holds one for the seconds a chunk takes, far less than the age
// limit.
func cleanTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err == nil {
			slog.Debug("artifact: removed stale pack temp file", "file", p)
		}
	}
}

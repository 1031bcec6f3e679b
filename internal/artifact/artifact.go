// Package artifact turns a template's files into an OCI 1.1 artifact and
// moves it through a registry.Store.
//
// An artifact is an OCI image manifest (artifactType registry.ArtifactType)
// whose config blob is a Config listing every file with its size, mode,
// SHA-256 and chunks, and whose layers are the chunks: each file is cut into
// fixed-size pieces, zstd-compressed where that pays, one layer per piece.
// Chunking keeps every blob far below per-layer registry limits and lets a
// pull resume per blob; identical chunks (the zero pages of a RAM file) are
// one blob.
//
// Pack builds the blobs in a spool directory or straight into the
// content-addressed blob cache Pull uses (and, given the memo of an earlier
// pack, skips files that have not changed), Push uploads what the store
// lacks, Pull downloads into the blob cache (resuming partial downloads),
// verifies every digest and reassembles the files, sparse, as the blobs
// arrive, into a directory that appears atomically or not at all.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// Errors callers can test for with errors.Is.
var (
	// ErrInvalid marks a manifest or config that breaks the format's rules.
	ErrInvalid = errors.New("invalid artifact")
	// ErrDigest marks bytes whose digest (or size) is not the one declared.
	ErrDigest = errors.New("digest mismatch")
	// ErrRefused marks a manifest the Verify hook turned down.
	ErrRefused = errors.New("manifest refused")
)

// Bounds on what a decoder accepts, so hostile bytes cannot make a pull
// allocate, read or write without limit.
const (
	MaxManifestSize = 4 << 20
	MaxConfigSize   = 1 << 20
	MaxFiles        = 1024
	// MaxChunks is over all files; it keeps the config and the manifest
	// within their size bounds.
	MaxChunks    = 4096
	MaxFileSize  = 1 << 40
	MinChunkSize = 4 << 10
	MaxChunkSize = 512 << 20
	maxNameLen   = 255
	maxSegLen    = 128
	maxSegments  = 16
)

// Annotation keys on layers and on the manifest.
const (
	AnnotationTitle    = "org.opencontainers.image.title"
	AnnotationCreated  = "org.opencontainers.image.created"
	AnnotationFile     = "dev.mvm.file"
	AnnotationChunk    = "dev.mvm.chunk"
	AnnotationOffset   = "dev.mvm.offset"
	AnnotationTemplate = "dev.mvm.template"
)

// Phase names the step a Progress report is about.
type Phase string

// Phases of Pack, Push and Pull.
const (
	PhasePack     Phase = "pack"
	PhaseUpload   Phase = "upload"
	PhaseDownload Phase = "download"
	PhaseAssemble Phase = "assemble"
)

// Progress is one report for a progress bar: Done of Total bytes of Phase,
// File being the file the latest bytes belong to. Pack and Pull's assemble
// phase count uncompressed bytes, Push and Pull's download phase blob bytes
// (blobs already in place count as done at once).
type Progress struct {
	Phase Phase
	File  string
	Done  int64
	Total int64
}

// progress serialises reports from parallel workers and throttles them.
// A held progress counts without reporting until released.
type progress struct {
	mu     sync.Mutex
	fn     func(Progress)
	phase  Phase
	done   int64
	total  int64
	last   int64
	held   bool
	onDone func()
}

const progressStep = 1 << 20

func newProgress(fn func(Progress), phase Phase, total int64) *progress {
	p := &progress{fn: fn, phase: phase, total: total, last: -1}
	p.add("", 0)
	return p
}

func (p *progress) add(file string, n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.done += n
	var then func()
	if p.done >= p.total && p.onDone != nil {
		then, p.onDone = p.onDone, nil
	}
	if p.fn != nil && !p.held && (p.done-p.last >= progressStep || p.done == p.total || p.last < 0) {
		p.last = p.done
		p.fn(Progress{Phase: p.phase, File: file, Done: p.done, Total: p.total})
	}
	p.mu.Unlock()
	if then != nil {
		then()
	}
}

// newHeldProgress is a progress that reports nothing until released.
func newHeldProgress(fn func(Progress), phase Phase, total int64) *progress {
	return &progress{fn: fn, phase: phase, total: total, last: -1, held: true}
}

// release resumes reports, starting with where the count stands.
func (p *progress) release() {
	p.mu.Lock()
	held := p.held
	p.held, p.last = false, -1
	p.mu.Unlock()
	if held {
		p.add("", 0)
	}
}

// whenDone calls fn once the count reaches the total (at once if it has).
func (p *progress) whenDone(fn func()) {
	p.mu.Lock()
	p.onDone = fn
	p.mu.Unlock()
	p.add("", 0)
}

// writer counts bytes written through it as progress of file.
func (p *progress) writer(file string) *progressWriter {
	return &progressWriter{p: p, file: file}
}

type progressWriter struct {
	p    *progress
	file string
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.p.add(w.file, int64(len(b)))
	return len(b), nil
}

// digestOf is the OCI digest of b.
func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// digestHex returns the hex part of a well-formed "sha256:<64 lowercase
// hex>" digest; anything else is refused, so a digest is safe to use as a
// file name.
func digestHex(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || !isHex64(h) {
		return "", fmt.Errorf("%w: bad digest %q", ErrInvalid, clip(d))
	}
	return h, nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// clip shortens untrusted text before it goes into an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// concurrency picks a worker count: n when set, else def.
func concurrency(n, def int) int {
	if n <= 0 {
		n = def
	}
	return max(1, n)
}

func cpus() int { return min(runtime.GOMAXPROCS(0), 4) }

// forEach runs fn over items with at most n at once and returns the first
// error; the context it passes is cancelled once any fn fails, so the
// others stop early.
func forEach[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	next := make(chan T)
	for range min(n, len(items)) {
		wg.Go(func() {
			for it := range next {
				if err := fn(ctx, it); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case next <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

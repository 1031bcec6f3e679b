package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
)

// PollInterval is how often Follow looks for new lines.
var PollInterval = 250 * time.Millisecond

// Kinds of VerifyError.
const (
	KindMalformed = "malformed" // not a strictly valid record
	KindEdited    = "edited"    // valid shape, but its hash does not match
	KindChain     = "chain"     // prev does not match: removed, inserted or edited line
	KindPartial   = "partial"   // the last line has no newline: truncated
	KindOrder     = "order"     // rotated files out of order
)

// VerifyError is the first problem Verify found.
type VerifyError struct {
	File   string `json:"file"` // path of the file
	Line   int    `json:"line"` // 1-based; 0 for a problem with the file itself
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

func (e *VerifyError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Summary counts what Verify checked.
type Summary struct {
	Records int `json:"records"`
	Files   int `json:"files"`
}

// Dir is the audit directory under the state directory.
func Dir(state string) string { return filepath.Join(state, "audit") }

// Files returns the trail's files in chain order (oldest rotated file
// first, audit.log last), as base names.
func Files(dir string) ([]string, error) {
	rot, err := rotatedFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rot {
		out = append(out, r.name)
	}
	if _, err := os.Lstat(filepath.Join(dir, CurrentName)); err == nil {
		out = append(out, CurrentName)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return out, nil
}

// Verify walks every file in order and checks that each line decodes
// strictly and that its prev is the hash of the line before it (across
// files). It returns a *VerifyError for the first bad line, or another
// error when a file cannot be read. A missing directory is an empty, valid
// trail. Writers are held off only while Verify takes its snapshot (the
// list of rotated files, which never change again, and the current size
// of audit.log), not while it reads.
func Verify(dir string) (Summary, error) {
	var sum Summary
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return sum, nil
	}
	rot, cur, curSize, err := snapshot(dir)
	if err != nil {
		return sum, err
	}
	if cur != nil {
		defer func() { _ = cur.Close() }()
	}
	for i := 1; i < len(rot); i++ {
		if rot[i].time.Before(rot[i-1].time) {
			return sum, &VerifyError{File: filepath.Join(dir, rot[i].name), Kind: KindOrder,
				Reason: fmt.Sprintf("rotated before %s although its sequence number is higher: files renamed or reordered", rot[i-1].name)}
		}
	}
	prev, prevFile := "", ""
	check := func(name string, r io.Reader) error {
		n, last, err := verifyFile(r, filepath.Join(dir, name), prev, prevFile)
		sum.Records += n
		if err != nil {
			return err
		}
		sum.Files++
		if n > 0 {
			prev, prevFile = last, name
		}
		return nil
	}
	for _, r := range rot {
		p := filepath.Join(dir, r.name)
		f, err := os.Open(p)
		if err != nil {
			return sum, fmt.Errorf("audit: %w", err)
		}
		err = check(r.name, f)
		_ = f.Close()
		if err != nil {
			return sum, err
		}
	}
	if cur != nil {
		if err := check(CurrentName, io.NewSectionReader(cur, 0, curSize)); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// snapshot lists the rotated files and opens audit.log (nil if absent),
// under a shared lock when it can take one, so that no write is half done.
func snapshot(dir string) (rot []rotated, cur *os.File, size int64, err error) {
	lk := flock.New(filepath.Join(dir, lockName), flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(context.Background(), LockTimeout)
	defer cancel()
	// Best effort: a reader that cannot lock still verifies.
	if ok, err := lk.TryRLockContext(ctx, 5*time.Millisecond); err == nil && ok {
		defer func() { _ = lk.Unlock() }()
	}
	if rot, err = rotatedFiles(dir); err != nil {
		return nil, nil, 0, err
	}
	path := filepath.Join(dir, CurrentName)
	cur, err = os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return rot, nil, 0, nil
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("audit: %w", err)
	}
	st, err := cur.Stat()
	if err != nil {
		_ = cur.Close()
		return nil, nil, 0, fmt.Errorf("audit: %w", err)
	}
	return rot, cur, st.Size(), nil
}

// verifyFile checks one file (read from r) whose first line must have prev
// want. It returns the number of good records and the hash of its last
// line (want if the file is empty).
func verifyFile(r io.Reader, path, want, prevFile string) (int, string, error) {
	name := path
	br := bufio.NewReader(r)
	records := 0
	for num := 1; ; num++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return records, want, nil
			}
			return records, "", &VerifyError{File: name, Line: num, Kind: KindPartial,
				Reason: "last line has no newline: truncated file or partial write"}
		}
		if err != nil {
			return records, "", fmt.Errorf("audit: read %s: %w", path, err)
		}
		r, err := DecodeLine(line)
		switch {
		case errors.Is(err, ErrHashMismatch):
			return records, "", &VerifyError{File: name, Line: num, Kind: KindEdited,
				Reason: "record hash does not match its contents: line edited"}
		case err != nil:
			return records, "", &VerifyError{File: name, Line: num, Kind: KindMalformed,
				Reason: fmt.Sprintf("does not decode (edited or partially written line): %v", err)}
		}
		if r.Prev != want {
			var why string
			switch {
			case num > 1:
				why = fmt.Sprintf("prev does not match line %d: a line was removed, inserted or edited before it", num-1)
			case prevFile != "":
				why = fmt.Sprintf("prev does not match the last line of %s: a file was removed, reordered or truncated", prevFile)
			default:
				why = "the first record has a prev: earlier records or files were removed"
			}
			return records, "", &VerifyError{File: name, Line: num, Kind: KindChain, Reason: why}
		}
		want = LineHash(line)
		records++
	}
}

// Tail returns the last n lines of the trail (oldest first, without their
// newlines), reading rotated files when audit.log has fewer.
func Tail(dir string, n int) ([][]byte, error) {
	t, err := openTail(dir, n)
	if t.f != nil {
		_ = t.f.Close()
	}
	return t.lines, err
}

// Follow calls emit with the last n lines, then with each line appended
// after them, following audit.log across rotation (also when several
// rotations happen between two polls), until ctx is done (then it returns
// nil) or emit fails.
func Follow(ctx context.Context, dir string, n int, emit func(line []byte) error) error {
	t, err := openTail(dir, n)
	defer func() {
		if t.f != nil {
			_ = t.f.Close()
		}
	}()
	if err != nil {
		return err
	}
	for _, l := range t.lines {
		if err := emit(l); err != nil {
			return err
		}
	}
	t.lines = nil
	path := filepath.Join(dir, CurrentName)
	for ctx.Err() == nil {
		if t.f != nil {
			if err := t.drain(emit); err != nil {
				return err
			}
		}
		st, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("audit: %w", err)
		case t.f == nil:
			if err := t.next(dir, emit); err != nil {
				return err
			}
			continue
		default:
			fst, err := t.f.Stat()
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			if !os.SameFile(st, fst) {
				// Rotated: finish the old file, then go on with the next.
				if err := t.drain(emit); err != nil {
					return err
				}
				if len(t.pending) > 0 {
					// A damaged last line; it will never be completed.
					if err := emit(t.pending); err != nil {
						return err
					}
				}
				_ = t.f.Close()
				t.f, t.pending, t.done = nil, nil, fst
				if err := t.next(dir, emit); err != nil {
					return err
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(PollInterval):
		}
	}
	return nil
}

// tail is the state of Tail and Follow: the open audit.log, read up to its
// end, and its unterminated last bytes; or, when no file is open, the last
// file read in full (nil if none).
type tail struct {
	lines   [][]byte
	f       *os.File
	pending []byte
	done    os.FileInfo
}

// next opens audit.log (if it exists) to follow it from its start, after
// emitting every rotated file written between t.done and it: files rotated
// while Follow was not looking.
func (t *tail) next(dir string, emit func([]byte) error) error {
	path := filepath.Join(dir, CurrentName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	fst, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	rot, err := rotatedFiles(dir)
	if err != nil {
		_ = f.Close()
		return err
	}
	// Opened first, listed second: a rotation in between shows up as f
	// being one of the rotated files, which is where catching up stops.
	from := 0
	if t.done != nil {
		from = len(rot)
		for i, r := range rot {
			if st, err := os.Stat(filepath.Join(dir, r.name)); err == nil && os.SameFile(st, t.done) {
				from = i + 1
			}
		}
	}
	for _, r := range rot[from:] {
		p := filepath.Join(dir, r.name)
		st, err := os.Stat(p)
		if err == nil && os.SameFile(st, fst) {
			break
		}
		data, err := os.ReadFile(p)
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("audit: read %s: %w", p, err)
		}
		lines, rest := splitLines(data)
		if len(rest) > 0 {
			lines = append(lines, rest)
		}
		for _, l := range lines {
			if err := emit(l); err != nil {
				_ = f.Close()
				return err
			}
		}
		t.done = st
	}
	t.f, t.pending = f, nil
	return nil
}

func openTail(dir string, n int) (tail, error) {
	var t tail
	path := filepath.Join(dir, CurrentName)
	f, err := os.Open(path)
	switch {
	case err == nil:
		t.f = f
		data, err := io.ReadAll(f)
		if err != nil {
			return t, fmt.Errorf("audit: read %s: %w", path, err)
		}
		t.lines, t.pending = splitLines(data)
	case !errors.Is(err, os.ErrNotExist):
		return t, fmt.Errorf("audit: %w", err)
	}
	rot, err := rotatedFiles(dir)
	if err != nil {
		return t, err
	}
	if t.f == nil && len(rot) > 0 {
		// Follow goes on after the newest rotated file.
		p := filepath.Join(dir, rot[len(rot)-1].name)
		if t.done, err = os.Stat(p); err != nil {
			return t, fmt.Errorf("audit: %w", err)
		}
	}
	var cur os.FileInfo
	if t.f != nil {
		if cur, err = t.f.Stat(); err != nil {
			return t, fmt.Errorf("audit: %w", err)
		}
	}
	for i := len(rot) - 1; i >= 0 && len(t.lines) < n; i-- {
		p := filepath.Join(dir, rot[i].name)
		if st, err := os.Stat(p); err == nil && cur != nil && os.SameFile(st, cur) {
			continue // audit.log, rotated since it was opened: read already
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return t, fmt.Errorf("audit: read %s: %w", p, err)
		}
		lines, rest := splitLines(data)
		if len(rest) > 0 {
			lines = append(lines, rest)
		}
		t.lines = append(lines, t.lines...)
	}
	if len(t.lines) > n {
		t.lines = t.lines[len(t.lines)-max(n, 0):]
	}
	return t, nil
}

// drain emits the complete lines appended to t.f since the last read.
func (t *tail) drain(emit func([]byte) error) error {
	data, err := io.ReadAll(t.f)
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", t.f.Name(), err)
	}
	if len(data) == 0 {
		return nil
	}
	lines, rest := splitLines(append(t.pending, data...))
	t.pending = rest
	for _, l := range lines {
		if err := emit(l); err != nil {
			return err
		}
	}
	return nil
}

// splitLines splits data into its complete lines (without newlines) and the
// bytes after the last newline.
func splitLines(data []byte) (lines [][]byte, rest []byte) {
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(data) > 0 {
				rest = bytes.Clone(data)
			}
			return lines, rest
		}
		lines = append(lines, data[:i:i])
		data = data[i+1:]
	}
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/gofrs/flock"
)

// File names inside the audit directory.
const (
	CurrentName = "audit.log"
	lockName    = ".lock"
)

// MaxFileSize is the size past which audit.log is rotated before the next
// append. A variable so that tests can rotate often.
var MaxFileSize int64 = 8 << 20

// LockTimeout bounds how long Append waits for another writer's lock.
var LockTimeout = 10 * time.Second

// rotatedRe matches rotated file names: audit-<UTC time>-<seq>.log.
var rotatedRe = regexp.MustCompile(`^audit-(\d{8}T\d{6}\.\d{9}Z)-(\d{6,})\.log$`)

const rotatedTimeLayout = "20060102T150405.000000000Z"

// Log is the audit trail in one directory (normally <state>/audit).
type Log struct {
	Dir string
	// MaxSize overrides MaxFileSize when positive.
	MaxSize int64
	// Now overrides time.Now when set (tests).
	Now func() time.Time
}

// New returns the audit log kept in dir.
func New(dir string) *Log { return &Log{Dir: dir} }

func (l *Log) maxSize() int64 {
	if l.MaxSize > 0 {
		return l.MaxSize
	}
	return MaxFileSize
}

func (l *Log) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}

// Append chains r to the last line of the trail and appends it, rotating
// audit.log first when it would grow past the size limit. Time, UID and PID
// are filled in when zero; Prev and Hash always. It holds the directory's
// exclusive lock from reading the last line until the line is on disk, so
// concurrent writers (goroutines or processes) neither lose lines nor fork
// the chain. It returns the record as written.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return Record{}, fmt.Errorf("audit: create %s: %w", l.Dir, err)
	}
	lk := flock.New(filepath.Join(l.Dir, lockName), flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(ctx, LockTimeout)
	defer cancel()
	ok, err := lk.TryLockContext(ctx, 5*time.Millisecond)
	if err != nil {
		return Record{}, fmt.Errorf("audit: lock %s: %w", lk.Path(), err)
	}
	if !ok {
		return Record{}, fmt.Errorf("audit: lock %s: not acquired", lk.Path())
	}
	defer func() { _ = lk.Unlock() }()
	return l.appendLocked(r)
}

func (l *Log) appendLocked(r Record) (Record, error) {
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Time = r.Time.UTC()
	if r.UID == 0 && r.PID == 0 {
		r.UID, r.PID = os.Getuid(), os.Getpid()
	}
	if r.Args == nil {
		r.Args = []string{}
	}
	path := filepath.Join(l.Dir, CurrentName)
	f, created, err := openCurrent(path)
	if err != nil {
		return Record{}, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return Record{}, fmt.Errorf("audit: stat %s: %w", path, err)
	}
	size := st.Size()
	var last []byte
	var partial bool
	if size > 0 {
		last, partial, err = lastLine(f, size)
		if err != nil {
			return Record{}, fmt.Errorf("audit: read %s: %w", path, err)
		}
	} else {
		last, err = l.lastRotatedLine()
		if err != nil {
			return Record{}, err
		}
	}
	r.Prev = ""
	if last != nil {
		r.Prev = LineHash(last)
	}
	line, err := seal(&r)
	if err != nil {
		return Record{}, err
	}
	if len(line) > MaxLineSize {
		return Record{}, fmt.Errorf("audit: record of %d bytes is longer than %d", len(line), MaxLineSize)
	}
	if size > 0 && size+int64(len(line))+1 > l.maxSize() {
		if err := f.Close(); err != nil {
			return Record{}, fmt.Errorf("audit: close %s: %w", path, err)
		}
		if err := l.rotate(path); err != nil {
			return Record{}, err
		}
		if f, created, err = openCurrent(path); err != nil {
			return Record{}, err
		}
		partial = false
	}
	buf := make([]byte, 0, len(line)+2)
	if partial {
		// A damaged (unterminated) last line: end it, so that this record
		// is a line of its own. Verify reports the damaged one.
		buf = append(buf, '\n')
	}
	buf = append(buf, line...)
	buf = append(buf, '\n')
	// One write: with O_APPEND the line lands whole at the end.
	n, err := f.Write(buf)
	if err != nil {
		return Record{}, fmt.Errorf("audit: write %s: %w", path, err)
	}
	if n != len(buf) {
		return Record{}, fmt.Errorf("audit: write %s: short write (%d of %d bytes)", path, n, len(buf))
	}
	if err := f.Sync(); err != nil {
		return Record{}, fmt.Errorf("audit: fsync %s: %w", path, err)
	}
	if created {
		if err := syncDir(l.Dir); err != nil {
			return Record{}, err
		}
	}
	return r, nil
}

// openCurrent opens (creating it 0600) audit.log for appending and reading.
func openCurrent(path string) (f *os.File, created bool, err error) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("audit: open %s: %w", path, err)
	}
	return f, created, nil
}

// rotate renames audit.log to the next rotated name.
func (l *Log) rotate(path string) error {
	files, err := rotatedFiles(l.Dir)
	if err != nil {
		return err
	}
	seq := 1
	if len(files) > 0 {
		seq = files[len(files)-1].seq + 1
	}
	name := fmt.Sprintf("audit-%s-%06d.log", l.now().Format(rotatedTimeLayout), seq)
	dst := filepath.Join(l.Dir, name)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("audit: rotate: %s already exists", dst)
	}
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("audit: rotate %s: %w", path, err)
	}
	return syncDir(l.Dir)
}

// lastRotatedLine is the last line of the newest rotated file, nil if
// there is none.
func (l *Log) lastRotatedLine() ([]byte, error) {
	files, err := rotatedFiles(l.Dir)
	if err != nil {
		return nil, err
	}
	for i := len(files) - 1; i >= 0; i-- {
		p := filepath.Join(l.Dir, files[i].name)
		last, err := fileLastLine(p)
		if err != nil {
			return nil, err
		}
		if last != nil {
			return last, nil
		}
	}
	return nil, nil
}

func fileLastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: stat %s: %w", path, err)
	}
	if st.Size() == 0 {
		return nil, nil
	}
	last, _, err := lastLine(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", path, err)
	}
	return last, nil
}

// lastLine returns the last line of the size bytes of r, without its
// newline, and whether it lacks one (a damaged, partial line). size > 0.
func lastLine(r io.ReaderAt, size int64) (line []byte, partial bool, err error) {
	const chunk = 4096
	end := size
	var tail []byte
	// The final byte is the last line's newline, unless it is partial.
	b := make([]byte, 1)
	if _, err := r.ReadAt(b, size-1); err != nil {
		return nil, false, err
	}
	if b[0] == '\n' {
		end--
	} else {
		partial = true
	}
	for off := end; off > 0; {
		n := int64(chunk)
		if n > off {
			n = off
		}
		off -= n
		buf := make([]byte, n)
		if _, err := r.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return append(buf[i+1:], tail...), partial, nil
		}
		tail = append(buf, tail...)
		if int64(len(tail)) > 2*MaxLineSize {
			// Not a line this package wrote; hash what we have.
			return tail, partial, nil
		}
	}
	return tail, partial, nil
}

type rotated struct {
	name string
	time time.Time
	seq  int
}

// rotatedFiles lists the rotated files in dir ordered by sequence number.
func rotatedFiles(dir string) ([]rotated, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: list %s: %w", dir, err)
	}
	var out []rotated
	for _, e := range ents {
		m := rotatedRe.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		t, err := time.Parse(rotatedTimeLayout, m[1])
		if err != nil {
			continue
		}
		seq, err := strconv.Atoi(m[2])
		if err != nil {
			continue
		}
		out = append(out, rotated{name: e.Name(), time: t, seq: seq})
	}
	slices.SortFunc(out, func(a, b rotated) int {
		if a.seq != b.seq {
			return a.seq - b.seq
		}
		return a.time.Compare(b.time)
	})
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", dir, err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", dir, err)
	}
	return nil
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock returns times one millisecond apart, so that rotated names and
// records are ordered even when the machine is fast.
func fakeClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

// newTrail writes n records to a new trail in a temp dir, rotating at
// maxSize (0: never in practice).
func newTrail(t *testing.T, n int, maxSize int64) *Log {
	t.Helper()
	l := &Log{Dir: filepath.Join(t.TempDir(), "audit"), MaxSize: maxSize, Now: fakeClock()}
	if maxSize == 0 {
		l.MaxSize = 1 << 40
	}
	for i := range n {
		rec := Record{Verb: "up", Target: fmt.Sprintf("vm-%d", i), Args: []string{"up", "--name", fmt.Sprintf("vm-%d", i)}, Result: "ok"}
		if _, err := l.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines, rest := splitLines(data)
	if len(rest) > 0 {
		t.Fatalf("%s: partial last line %q", path, rest)
	}
	return lines
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestChainAcrossRotation(t *testing.T) {
	const n = 60
	l := newTrail(t, n, 1000)
	files, err := Files(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 || files[len(files)-1] != CurrentName {
		t.Fatalf("want several files ending with %s, got %v", CurrentName, files)
	}
	sum, err := Verify(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != n || sum.Files != len(files) {
		t.Fatalf("summary %+v, want %d records in %d files", sum, n, len(files))
	}
	// Every file but the first starts with the hash of the one before's last line.
	var prevLast []byte
	total := 0
	for i, name := range files {
		p := filepath.Join(l.Dir, name)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, st.Mode().Perm())
		}
		if name != CurrentName && st.Size() > 1000 {
			t.Errorf("%s: %d bytes, over the rotation size", name, st.Size())
		}
		lines := readLines(t, p)
		first, err := DecodeLine(lines[0])
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if i > 0 {
			want = LineHash(prevLast)
		}
		if first.Prev != want {
			t.Errorf("%s: first prev %q, want %q", name, first.Prev, want)
		}
		prevLast = lines[len(lines)-1]
		total += len(lines)
	}
	if total != n {
		t.Errorf("%d lines in all, want %d", total, n)
	}
	st, err := os.Stat(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
	}
}

func TestVerifyEmpty(t *testing.T) {
	sum, err := Verify(filepath.Join(t.TempDir(), "missing"))
	if err != nil || sum != (Summary{}) {
		t.Fatalf("%+v %v", sum, err)
	}
}

// Each way of damaging the trail is reported at the right file and line.
func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		rotate bool
		damage func(t *testing.T, l *Log)
		file   string // base name of the file reported; "" for audit.log
		line   int
		kind   string
	}{
		{
			name: "edited line",
			damage: func(t *testing.T, l *Log) {
				editLine(t, filepath.Join(l.Dir, CurrentName), 3, func(b []byte) []byte {
					return bytes.Replace(b, []byte(`"vm-2"`), []byte(`"vm-X"`), 1)
				})
			},
			line: 3, kind: KindEdited,
		},
		{
			name: "edited line with its hash recomputed",
			damage: func(t *testing.T, l *Log) {
				editLine(t, filepath.Join(l.Dir, CurrentName), 3, func(b []byte) []byte {
					r, err := DecodeLine(b)
					if err != nil {
						t.Fatal(err)
					}
					r.Result = "ok"
					r.Target = "innocent"
					out, err := seal(&r)
					if err != nil {
						t.Fatal(err)
					}
					return out
				})
			},
			line: 4, kind: KindChain,
		},
		{
			name: "edited last line",
			damage: func(t *testing.T, l *Log) {
				editLine(t, filepath.Join(l.Dir, CurrentName), 6, func(b []byte) []byte {
					return bytes.Replace(b, []byte(`"exit":0`), []byte(`"exit":1`), 1)
				})
			},
			line: 6, kind: KindEdited,
		},
		{
			name: "reformatted line",
			damage: func(t *testing.T, l *Log) {
				editLine(t, filepath.Join(l.Dir, CurrentName), 2, func(b []byte) []byte {
					return bytes.Replace(b, []byte(`,"uid"`), []byte(`, "uid"`), 1)
				})
			},
			line: 2, kind: KindMalformed,
		},
		{
			name: "removed line",
			damage: func(t *testing.T, l *Log) {
				p := filepath.Join(l.Dir, CurrentName)
				lines := readLines(t, p)
				writeLines(t, p, append(lines[:2:2], lines[3:]...))
			},
			line: 3, kind: KindChain,
		},
		{
			name: "removed first line",
			damage: func(t *testing.T, l *Log) {
				p := filepath.Join(l.Dir, CurrentName)
				writeLines(t, p, readLines(t, p)[1:])
			},
			line: 1, kind: KindChain,
		},
		{
			name: "swapped lines",
			damage: func(t *testing.T, l *Log) {
				p := filepath.Join(l.Dir, CurrentName)
				lines := readLines(t, p)
				lines[3], lines[4] = lines[4], lines[3]
				writeLines(t, p, lines)
			},
			line: 4, kind: KindChain,
		},
		{
			name: "inserted garbage",
			damage: func(t *testing.T, l *Log) {
				p := filepath.Join(l.Dir, CurrentName)
				lines := readLines(t, p)
				writeLines(t, p, append(lines[:5:5], append([][]byte{[]byte("hello")}, lines[5:]...)...))
			},
			line: 6, kind: KindMalformed,
		},
		{
			name: "truncated in the last line",
			damage: func(t *testing.T, l *Log) {
				truncateBy(t, filepath.Join(l.Dir, CurrentName), 10)
			},
			line: 6, kind: KindPartial,
		},
		{
			name: "truncated mid-file",
			damage: func(t *testing.T, l *Log) {
				p := filepath.Join(l.Dir, CurrentName)
				lines := readLines(t, p)
				size := 0
				for _, b := range lines[:3] {
					size += len(b) + 1
				}
				if err := os.Truncate(p, int64(size+40)); err != nil {
					t.Fatal(err)
				}
			},
			line: 4, kind: KindPartial,
		},
		{
			name:   "truncated rotated file",
			rotate: true,
			damage: func(t *testing.T, l *Log) {
				truncateBy(t, filepath.Join(l.Dir, rotatedName(t, l, 0)), 1)
			},
			file: "#0", line: -1, kind: KindPartial,
		},
		{
			name:   "rotated file removed",
			rotate: true,
			damage: func(t *testing.T, l *Log) {
				if err := os.Remove(filepath.Join(l.Dir, rotatedName(t, l, 1))); err != nil {
					t.Fatal(err)
				}
			},
			file: "#2", line: 1, kind: KindChain, // the file after the removed one
		},
		{
			name:   "rotated files swapped",
			rotate: true,
			damage: func(t *testing.T, l *Log) {
				a, b := filepath.Join(l.Dir, rotatedName(t, l, 0)), filepath.Join(l.Dir, rotatedName(t, l, 1))
				tmp := a + ".tmp"
				for _, mv := range [][2]string{{a, tmp}, {b, a}, {tmp, b}} {
					if err := os.Rename(mv[0], mv[1]); err != nil {
						t.Fatal(err)
					}
				}
			},
			file: "#0", line: 1, kind: KindChain,
		},
		{
			name:   "rotated files renumbered",
			rotate: true,
			damage: func(t *testing.T, l *Log) {
				// Give the first file a sequence number after the second's.
				a := rotatedName(t, l, 0)
				b := strings.Replace(a, "-000001.log", "-000099.log", 1)
				if err := os.Rename(filepath.Join(l.Dir, a), filepath.Join(l.Dir, b)); err != nil {
					t.Fatal(err)
				}
			},
			file: "#-1", line: 0, kind: KindOrder,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l *Log
			if tt.rotate {
				l = newTrail(t, 40, 1000)
			} else {
				l = newTrail(t, 6, 0)
			}
			if _, err := Verify(l.Dir); err != nil {
				t.Fatalf("before damage: %v", err)
			}
			var want string
			if tt.file != "" {
				want = rotatedName(t, l, mustAtoi(t, tt.file[1:]))
			}
			tt.damage(t, l)
			if tt.file == "" {
				want = CurrentName
			} else if tt.file == "#-1" {
				// The renamed file is now the last rotated one.
				want = rotatedName(t, l, -1)
			}
			line := tt.line
			if line == -1 {
				line = len(readLinesLoose(t, filepath.Join(l.Dir, want)))
			}
			_, err := Verify(l.Dir)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want a VerifyError", err)
			}
			if filepath.Base(ve.File) != want || ve.Line != line || ve.Kind != tt.kind {
				t.Fatalf("got %s:%d %s (%v), want %s:%d %s", filepath.Base(ve.File), ve.Line, ve.Kind, ve, want, line, tt.kind)
			}
			if !strings.Contains(ve.Error(), want) {
				t.Errorf("message %q does not name the file", ve.Error())
			}
		})
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rotatedName is the i-th rotated file (negative: from the end).
func rotatedName(t *testing.T, l *Log, i int) string {
	t.Helper()
	rot, err := rotatedFiles(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(rot)
	}
	if i < 0 || i >= len(rot) {
		t.Fatalf("only %d rotated files", len(rot))
	}
	return rot[i].name
}

func readLinesLoose(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines, rest := splitLines(data)
	if len(rest) > 0 {
		lines = append(lines, rest)
	}
	return lines
}

func editLine(t *testing.T, path string, num int, edit func([]byte) []byte) {
	t.Helper()
	lines := readLines(t, path)
	before := string(lines[num-1])
	lines[num-1] = edit(bytes.Clone(lines[num-1]))
	if string(lines[num-1]) == before {
		t.Fatal("edit changed nothing")
	}
	writeLines(t, path, lines)
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// After a crash left a partial line, the next record still lands on a line
// of its own and the damage is reported where it is.
func TestAppendAfterPartialLine(t *testing.T) {
	l := newTrail(t, 3, 0)
	truncateBy(t, filepath.Join(l.Dir, CurrentName), 5)
	if _, err := l.Append(context.Background(), Record{Verb: "down", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(l.Dir, CurrentName))
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	r, err := DecodeLine(lines[3])
	if err != nil || r.Verb != "down" || r.Prev != LineHash(lines[2]) {
		t.Fatalf("new line %+v %v", r, err)
	}
	_, err = Verify(l.Dir)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 3 || ve.Kind != KindMalformed {
		t.Fatalf("Verify = %v, want line 3 malformed", err)
	}
}

// A line far longer than lastLine's read chunk is hashed whole.
func TestLongLines(t *testing.T) {
	l := newTrail(t, 1, 0)
	big := strings.Repeat("x", 20000)
	for range 2 {
		if _, err := l.Append(context.Background(), Record{Verb: "cp", Args: []string{big}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if sum, err := Verify(l.Dir); err != nil || sum.Records != 3 {
		t.Fatalf("%+v %v", sum, err)
	}
}

const (
	childEnv  = "MVM_AUDIT_TEST_CHILD"
	childRecs = 25
)

// TestChildWriter is the body of the subprocess writers of
// TestConcurrentWriters; it does nothing in a normal run.
func TestChildWriter(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("only as a subprocess of TestConcurrentWriters")
	}
	dir, who, ok := strings.Cut(spec, "|")
	if !ok {
		t.Fatalf("bad %s=%q", childEnv, spec)
	}
	l := &Log{Dir: dir, MaxSize: 4096}
	for i := range childRecs {
		if _, err := l.Append(context.Background(), Record{Verb: "exec", Target: who, Args: []string{strconv.Itoa(i)}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
}

// Ten writers at once (seven goroutines and three processes), rotating as
// they go, lose nothing and keep the chain valid.
func TestConcurrentWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	var wg sync.WaitGroup
	errs := make(chan error, 11)
	var who []string
	for p := range 3 {
		name := fmt.Sprintf("proc-%d", p)
		who = append(who, name)
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+dir+"|"+name)
		wg.Go(func() {
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %v\n%s", name, err, out)
			}
		})
	}
	for g := range 7 {
		name := fmt.Sprintf("goroutine-%d", g)
		who = append(who, name)
		wg.Go(func() {
			l := &Log{Dir: dir, MaxSize: 4096}
			for i := range childRecs {
				if _, err := l.Append(context.Background(), Record{Verb: "exec", Target: name, Args: []string{strconv.Itoa(i)}, Result: "ok"}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Verify sees a valid trail at every moment of the writing.
	stop := make(chan struct{})
	verified := make(chan int)
	go func() {
		runs := 0
		defer func() { verified <- runs }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := Verify(dir); err != nil {
				errs <- fmt.Errorf("verify during writes: %w", err)
				return
			}
			runs++
		}
	}()
	wg.Wait()
	close(stop)
	t.Logf("%d verifications during the writes", <-verified)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sum, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := 10 * childRecs; sum.Records != want {
		t.Fatalf("%d records, want %d", sum.Records, want)
	}
	if sum.Files < 2 {
		t.Errorf("no rotation happened (%d files)", sum.Files)
	}
	seen := map[string]int{}
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		for _, line := range readLines(t, filepath.Join(dir, f)) {
			r, err := DecodeLine(line)
			if err != nil {
				t.Fatal(err)
			}
			seen[r.Target+"/"+r.Args[0]]++
		}
	}
	for _, w := range who {
		for i := range childRecs {
			if k := fmt.Sprintf("%s/%d", w, i); seen[k] != 1 {
				t.Errorf("%s recorded %d times", k, seen[k])
			}
		}
	}
}

func TestTailAcrossRotation(t *testing.T) {
	l := newTrail(t, 30, 1000)
	tests := []struct{ n, want int }{{0, 0}, {1, 1}, {5, 5}, {25, 25}, {30, 30}, {100, 30}}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			lines, err := Tail(l.Dir, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != tt.want {
				t.Fatalf("%d lines, want %d", len(lines), tt.want)
			}
			for i, line := range lines {
				r, err := DecodeLine(line)
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("vm-%d", 30-tt.want+i); r.Target != want {
					t.Fatalf("line %d is %s, want %s", i, r.Target, want)
				}
			}
		})
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	defer func(d time.Duration) { PollInterval = d }(PollInterval)
	PollInterval = 5 * time.Millisecond
	l := newTrail(t, 3, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, l.Dir, 2, func(line []byte) error {
			r, err := DecodeLine(line)
			if err != nil {
				return err
			}
			got <- r.Target
			return nil
		})
	}()
	expect := func(i int, w string) {
		t.Helper()
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("record %d is %s, want %s", i, g, w)
			}
		case err := <-done:
			t.Fatalf("Follow ended early: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for record %d (%s)", i, w)
		}
	}
	// The last two existing records first.
	expect(0, "vm-1")
	expect(1, "vm-2")
	var want []string
	// Enough records to rotate a few times while following.
	for i := range 20 {
		name := fmt.Sprintf("new-%d", i)
		want = append(want, name)
		if _, err := l.Append(context.Background(), Record{Verb: "rm", Target: name, Args: []string{"rm", name}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	rot, err := rotatedFiles(l.Dir)
	if err != nil || len(rot) < 2 {
		t.Fatalf("want rotation: %d files, %v", len(rot), err)
	}
	for i, w := range want {
		expect(i+2, w)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	select {
	case g := <-got:
		t.Fatalf("unexpected extra record %s", g)
	default:
	}
}

func TestAppendFillsFields(t *testing.T) {
	l := newTrail(t, 0, 0)
	r, err := l.Append(context.Background(), Record{Verb: "up", Result: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != os.Getuid() || r.PID != os.Getpid() || r.Time.IsZero() || r.Time.Location() != time.UTC || r.Prev != "" || r.Args == nil {
		t.Fatalf("%+v", r)
	}
	lines := readLines(t, filepath.Join(l.Dir, CurrentName))
	if !strings.HasPrefix(string(lines[0]), `{"time":"2030-01-02T03:04:05.001Z","uid":`) {
		t.Fatalf("line %s", lines[0])
	}
}

func TestAppendLockTimeout(t *testing.T) {
	defer func(d time.Duration) { LockTimeout = d }(LockTimeout)
	LockTimeout = 50 * time.Millisecond
	l := newTrail(t, 1, 0)
	other := &Log{Dir: l.Dir}
	// Hold the lock as another writer would.
	holder := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_ = withLock(t, l.Dir, func() {
			close(holder)
			<-release
		})
	}()
	<-holder
	_, err := other.Append(context.Background(), Record{Verb: "up", Result: "ok"})
	close(release)
	if err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("Append under a held lock: %v", err)
	}
}

package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// withLock runs fn holding the trail's lock, as another writer would.
func withLock(t *testing.T, dir string, fn func()) error {
	lk := flock.New(filepath.Join(dir, lockName))
	if err := lk.Lock(); err != nil {
		return err
	}
	defer func() { _ = lk.Unlock() }()
	fn()
	return nil
}

func sampleLine(t testing.TB) []byte {
	t.Helper()
	r := Record{
		Time:   time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC),
		UID:    1000,
		PID:    42,
		Verb:   "network create",
		Target: "isolated",
		Args:   []string{"network", "create", "isolated", "<x>&"},
		Result: "ok",
		Prev:   strings.Repeat("ab", 32),
	}
	line, err := seal(&r)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func TestDecodeLineRoundTrip(t *testing.T) {
	line := sampleLine(t)
	if !bytes.Contains(line, []byte(`"<x>&"`)) {
		t.Errorf("HTML characters escaped: %s", line)
	}
	for _, in := range [][]byte{line, append(bytes.Clone(line), '\n')} {
		r, err := DecodeLine(in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Verb != "network create" || r.Target != "isolated" || r.UID != 1000 || len(r.Args) != 4 {
			t.Fatalf("%+v", r)
		}
	}
}

func TestDecodeLineStrict(t *testing.T) {
	good := string(sampleLine(t))
	rehash := func(edit func(*Record)) string {
		r, err := DecodeLine([]byte(good))
		if err != nil {
			t.Fatal(err)
		}
		edit(&r)
		b, err := seal(&r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name, line string
		want       string // in the error
		is         error
	}{
		{"empty", "", "empty line", nil},
		{"not json", "hello", "not a JSON object", nil},
		{"array", "[1]", "not a JSON object", nil},
		{"trailing data", good + " {}", "not a JSON object", nil},
		{"missing field", strings.Replace(good, `"target":"isolated",`, "", 1), `"target" missing`, nil},
		{"unknown field", strings.Replace(good, `{"time"`, `{"x":1,"time"`, 1), `unknown field "x"`, nil},
		{"wrong type", strings.Replace(good, `"uid":1000`, `"uid":"1000"`, 1), "bad field", nil},
		{"space", strings.Replace(good, `,"pid"`, `, "pid"`, 1), "", ErrNotCanonical},
		{"key order", strings.Replace(good, `"uid":1000,"pid":42`, `"pid":42,"uid":1000`, 1), "", ErrNotCanonical},
		{"escaped html", strings.Replace(good, `<x>`, `\u003cx\u003e`, 1), "", ErrNotCanonical},
		{"duplicate key", strings.Replace(good, `"uid":1000,`, `"uid":1,"uid":1000,`, 1), "", ErrNotCanonical},
		{"not utc", strings.Replace(good, `05.000000006Z"`, `05.000000006+01:00"`, 1), "not UTC", nil},
		{"empty verb", rehash(func(r *Record) { r.Verb = "" }), "empty verb", nil},
		{"bad result", rehash(func(r *Record) { r.Result = "fine" }), "neither", nil},
		{"short prev", rehash(func(r *Record) { r.Prev = "abc" }), "prev", nil},
		{"upper-case hash", strings.Replace(good, `"hash":"`, `"hash":"A`, 1)[:len(good)-1] + `"}`, "hash", nil},
		{"edited", strings.Replace(good, "isolated", "isolatex", 1), "", ErrHashMismatch},
		{"hash of another record", good[:len(good)-66] + strings.Repeat("0", 64) + `"}`, "", ErrHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.line == good {
				t.Fatal("test line is the good line")
			}
			_, err := DecodeLine([]byte(tt.line))
			switch {
			case err == nil:
				t.Fatalf("accepted %s", tt.line)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Fatalf("error %v, want %v", err, tt.is)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLineHash(t *testing.T) {
	if LineHash([]byte("a\n")) != LineHash([]byte("a")) || LineHash([]byte("a")) == LineHash([]byte("b")) {
		t.Fatal("LineHash must ignore one trailing newline only")
	}
}

// The decoder never panics, and accepts only lines that it would write
// itself byte for byte.
func FuzzDecodeLine(f *testing.F) {
	good := sampleLine(f)
	f.Add(good)
	f.Add(append(bytes.Clone(good), '\n'))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"time":"2030-01-02T03:04:05Z","uid":0,"pid":0,"verb":"up","target":"","args":null,"result":"ok","exit":0,"prev":"","hash":""}`))
	f.Add(bytes.Replace(good, []byte(`"ok"`), []byte(`"error: \u001b[31m"`), 1))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeLine(line)
		if err != nil {
			return
		}
		out, err := encode(r)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(out, bytes.TrimSuffix(line, []byte("\n"))) {
			t.Fatalf("accepted a non-canonical line\n in: %q\nout: %q", line, out)
		}
		if h, err := recordHash(r); err != nil || h != r.Hash {
			t.Fatalf("accepted a wrong hash %s (want %s, %v)", r.Hash, h, err)
		}
		if _, err := DecodeLine(out); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
	})
}

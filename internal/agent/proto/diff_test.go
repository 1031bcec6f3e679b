package proto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseDiff(t *testing.T) {
	tests := []struct {
		name, args, want string
	}{
		{"empty", ``, ""},
		{"full", `{"root":"/etc","exclude":["/proc","/tmp"],"hash_newer_than_ns":5,"hash_limit":100}`, ""},
		{"relative root", `{"root":"etc"}`, "clean absolute"},
		{"unclean exclude", `{"exclude":["/a/../b"]}`, "clean absolute"},
		{"huge hash limit", `{"hash_limit":9999999999999}`, "hash_limit"},
		{"negative since", `{"hash_newer_than_ns":-1}`, "negative"},
		{"unknown field", `{"recurse":true}`, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseDiff([]byte(tt.args))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.Root == "" || r.HashLimit <= 0 {
					t.Fatalf("defaults not filled in: %+v", r)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDiffEntriesRoundTrip(t *testing.T) {
	in := []DiffEntry{
		{Path: "/", Type: DiffDir, Mode: 0o755},
		{Path: "/etc/passwd", Type: DiffFile, Mode: 0o644, Size: 12, MtimeNS: 1, SHA256: strings.Repeat("ab", 32)},
		{Path: "/bin/sh", Type: DiffSymlink, Mode: 0o777, Link: "busybox <&>"},
		{Path: "/dev/null", Type: DiffChar, Mode: 0o666, Rdev: 259},
	}
	var buf bytes.Buffer
	enc := NewDiffEncoder(&buf)
	for _, e := range in {
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	var out []DiffEntry
	if err := ReadDiffEntries(&buf, func(e DiffEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("got %d entries", len(out))
	}
	for i := range in {
		if out[i] != in[i] {
			t.Fatalf("entry %d: %+v != %+v", i, out[i], in[i])
		}
	}
}

func TestReadDiffEntriesRejects(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"relative", `{"p":"etc","t":"f","m":0,"u":0,"g":0}`, "clean absolute"},
		{"type", `{"p":"/x","t":"z","m":0,"u":0,"g":0}`, "unknown type"},
		{"mode", `{"p":"/x","t":"f","m":99999,"u":0,"g":0}`, "permission bits"},
		{"hash", `{"p":"/x","t":"f","m":0,"u":0,"g":0,"h":"xyz"}`, "sha256"},
		{"long line", `{"p":"/` + strings.Repeat("a", MaxDiffLine) + `"}`, "longer than"},
		{"garbage", "\x00\x01", "diff entry 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ReadDiffEntries(strings.NewReader(tt.in+"\n"), func(DiffEntry) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	stop := errors.New("stop")
	in := `{"p":"/a","t":"d","m":493,"u":0,"g":0}` + "\n" + `{"p":"/b","t":"d","m":493,"u":0,"g":0}`
	n := 0
	if err := ReadDiffEntries(strings.NewReader(in), func(DiffEntry) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("callback error: %v after %d", err, n)
	}
}

func FuzzReadDiffEntries(f *testing.F) {
	f.Add([]byte(`{"p":"/etc","t":"d","m":493,"u":0,"g":0}` + "\n" + `{"p":"/etc/x","t":"f","m":420,"u":0,"g":0,"s":3}`))
	f.Add([]byte("\n\n{}\n"))
	f.Add([]byte(`{"p":"/a/../b","t":"l","m":0,"u":0,"g":0,"l":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ReadDiffEntries(bytes.NewReader(b), func(e DiffEntry) error {
			if err := e.Validate(); err != nil {
				t.Fatalf("delivered an invalid entry: %v", err)
			}
			return nil
		})
	})
}

func FuzzParseDiff(f *testing.F) {
	f.Add([]byte(`{"root":"/","exclude":["/proc"]}`))
	f.Add([]byte(`{"hash_limit":-5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseDiff(b)
		if err == nil && (r.HashLimit <= 0 || r.HashLimit > MaxDiffHashLimit || r.Root == "") {
			t.Fatalf("accepted %+v", r)
		}
	})
}

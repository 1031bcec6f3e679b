package tarx

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	body       string
}

func archive(t testing.TB, es ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			_, _ = tw.Write([]byte(e.body))
		}
	}
	_ = tw.Close()
	return b.Bytes()
}

func TestExtractRefuses(t *testing.T) {
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dotdot", []entry{{name: "a/../../x", typ: tar.TypeReg, body: "x"}}, "escapes"},
		{"absolute", []entry{{name: "/etc/x", typ: tar.TypeReg, body: "x"}}, "absolute"},
		{"through symlink", []entry{{name: "l", link: "..", typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg, body: "x"}}, "symlink"},
		{"through absolute symlink", []entry{{name: "l", link: "/tmp", typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg, body: "x"}}, "symlink"},
		{"hard link", []entry{{name: "h", link: "/etc/passwd", typ: tar.TypeLink}}, "unsupported"},
		{"device", []entry{{name: "d", typ: tar.TypeChar}}, "unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			dest := filepath.Join(outer, "dest")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Extract(bytes.NewReader(archive(t, tc.entries...)), dest, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
			assertContained(t, outer, dest)
		})
	}
}

func TestExtractReplacesPlantedSymlink(t *testing.T) {
	outer := t.TempDir()
	dest := filepath.Join(outer, "dest")
	_ = os.Mkdir(dest, 0o755)
	victim := filepath.Join(outer, "victim")
	_ = os.WriteFile(victim, []byte("keep"), 0o644)
	_ = os.Symlink(victim, filepath.Join(dest, "f"))
	if _, err := Extract(bytes.NewReader(archive(t, entry{name: "f", typ: tar.TypeReg, body: "new"})), dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatal("wrote through a planted symlink")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "f")); string(b) != "new" {
		t.Fatalf("f = %q", b)
	}
}

func TestRoundTripRename(t *testing.T) {
	src := filepath.Join(t.TempDir(), "one.txt")
	_ = os.WriteFile(src, []byte("hello"), 0o600)
	var b bytes.Buffer
	if _, err := Write(&b, src); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	st, err := Extract(&b, dest, Options{Rename: "two.txt"})
	if err != nil || st.Files != 1 || st.Bytes != 5 {
		t.Fatalf("%+v %v", st, err)
	}
	fi, err := os.Stat(filepath.Join(dest, "two.txt"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", fi, err)
	}
}

// assertContained fails if anything but dest appeared in outer.
func assertContained(t testing.TB, outer, dest string) {
	t.Helper()
	_ = filepath.WalkDir(outer, func(p string, d fs.DirEntry, err error) error {
		if p != outer && p != dest && !strings.HasPrefix(p, dest+string(filepath.Separator)) {
			t.Fatalf("extract created %s outside the destination", p)
		}
		return nil
	})
}

func FuzzExtract(f *testing.F) {
	f.Add(archive(f, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/f", typ: tar.TypeReg, body: "x"}))
	f.Add(archive(f, entry{name: "l", link: "..", typ: tar.TypeSymlink}, entry{name: "l/x", typ: tar.TypeReg, body: "x"}))
	f.Add(archive(f, entry{name: "../x", typ: tar.TypeReg, body: "x"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		outer := t.TempDir()
		dest := filepath.Join(outer, "dest")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _ = Extract(bytes.NewReader(b), dest, Options{})
		assertContained(t, outer, dest)
	})
}

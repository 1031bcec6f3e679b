package tarx

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestExtractTop: with Options.Top an untrusted archive stays within the
// one name asked for, and so do its symlinks.
func TestExtractTop(t *testing.T) {
	cases := []struct {
		name    string
		entries []entry
		want    string // error substring; "" for success
	}{
		{"the name and below", []entry{{name: "top/", typ: tar.TypeDir}, {name: "top/a", typ: tar.TypeReg, body: "a"}}, ""},
		{"implied top", []entry{{name: "top/sub/a", typ: tar.TypeReg, body: "a"}}, ""},
		{"link inside", []entry{{name: "top/d/", typ: tar.TypeDir}, {name: "top/d/l", link: "../x", typ: tar.TypeSymlink}}, ""},
		{"link to a sibling", []entry{{name: "top/l", link: "./x/y", typ: tar.TypeSymlink}}, ""},
		{"another name", []entry{{name: "top", typ: tar.TypeReg}, {name: "other", typ: tar.TypeReg}}, `"other": not under "top"`},
		{"prefix is not the name", []entry{{name: "topper", typ: tar.TypeReg}}, "not under"},
		{"absolute link", []entry{{name: "top/l", link: "/etc", typ: tar.TypeSymlink}}, "absolute"},
		{"link climbs out", []entry{{name: "top/d/l", link: "../../x", typ: tar.TypeSymlink}}, "points outside"},
		{"link climbs after a name", []entry{{name: "top/l", link: "d/../../x", typ: tar.TypeSymlink}}, "after a name"},
		{"the name is a link", []entry{{name: "top", link: "x", typ: tar.TypeSymlink}}, "points outside"},
		{"empty link", []entry{{name: "top/l", typ: tar.TypeSymlink}}, "empty"},
		{"device", []entry{{name: "top/c", typ: tar.TypeChar}}, "unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			dest := filepath.Join(outer, "dest")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Extract(bytes.NewReader(archive(t, tc.entries...)), dest, Options{Top: "top", Rename: "renamed"})
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			assertContained(t, outer, dest)
			if tc.want == "" {
				if _, err := os.Lstat(filepath.Join(dest, "renamed")); err != nil {
					t.Fatalf("renamed: %v", err)
				}
			}
		})
	}
}

// TestExtractChownsImpliedParents: directories an archive only implies
// belong to Options.Chown like everything else.
func TestExtractChownsImpliedParents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dest := t.TempDir()
	if _, err := Extract(bytes.NewReader(archive(t, entry{name: "a/b/c", typ: tar.TypeReg, body: "x"})), dest, Options{Chown: &[2]int{4321, 99}}); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"a", "a/b", "a/b/c"} {
		fi, err := os.Lstat(filepath.Join(dest, rel))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 99 {
			t.Errorf("%s belongs to %d:%d", rel, st.Uid, st.Gid)
		}
	}
}

func TestTopName(t *testing.T) {
	for in, want := range map[string]string{"/var/log/app.log": "app.log", "/var/log/": "log", "/": "root", ".": "root", "a/..": "root", "x": "x"} {
		if got := TopName(in); got != want {
			t.Errorf("TopName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteRoot archives a tree through a root: entries in name order,
// links as links, nothing outside the root.
func TestWriteRoot(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"tree/b", "tree/a"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "b", "f"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(tree, "a", "l")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var b bytes.Buffer
	st, err := WriteRoot(&b, root, "tree", "named")
	if err != nil || st.Files != 5 || st.Bytes != 4 {
		t.Fatalf("%+v %v", st, err)
	}
	var got []string
	tr := tar.NewReader(&b)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got = append(got, h.Name+"|"+h.Linkname)
	}
	want := []string{"named/|", "named/a/|", "named/a/l|/etc/passwd", "named/b/|", "named/b/f|"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("entries %v, want %v", got, want)
	}
}

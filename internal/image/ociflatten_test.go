package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// tent is one entry of a test layer.
type tent struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
}

func file(name, body string) tent { return tent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) tent        { return tent{name: name, typ: tar.TypeDir, mode: 0o755} }
func wh(name string) tent         { return tent{name: name, typ: tar.TypeReg, mode: 0o600} }

func layerTar(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// treeOf lists a staging tree as "path type" lines (type: d, f:BODY, l:TARGET).
func treeOf(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, "/"+rel+" l:"+l)
		case d.IsDir():
			out = append(out, "/"+rel+" d")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, "/"+rel+" f:"+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestApplyLayerWhiteouts(t *testing.T) {
	lower := layerTar(t,
		dir("etc/"), file("etc/keep", "k"), file("etc/gone", "g"),
		dir("opt/"), dir("opt/sub/"), file("opt/sub/a", "a"),
		dir("var/"), dir("var/opq/"), file("var/opq/old", "o"), dir("var/opq/olddir/"), file("var/opq/olddir/x", "x"),
		tent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"}, dir("usr/"), dir("usr/lib/"), file("usr/lib/libc", "c"),
		file("replace-me", "file"),
	)
	upper := layerTar(t,
		wh("etc/.wh.gone"),
		wh("opt/.wh.sub"),
		// Opaque: lower entries of var/opq vanish; this layer's stay, in
		// either order around the marker.
		file("var/opq/new", "n"),
		wh("var/opq/.wh..wh..opq"),
		file("var/opq/after", "a2"),
		// A whiteout of something this same layer added is ignored.
		file("etc/mine", "m"), wh("etc/.wh.mine"),
		// Writes through a link in a lower layer land at its target.
		file("lib/libm", "m"),
		// A directory replaces a file.
		dir("replace-me/"), file("replace-me/inside", "i"),
		// Parents need not be listed.
		file("new/deep/file", "d"),
		// Whiteouts of missing things are no-ops.
		wh("nowhere/.wh.x"), wh("etc/.wh.never"),
	)
	root := t.TempDir()
	s := &stager{root: root, owners: map[string]owner{}}
	for i, l := range [][]byte{lower, upper} {
		if err := s.applyLayer(context.Background(), bytes.NewReader(l)); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	got := strings.Join(treeOf(t, root), "\n")
	want := strings.Join([]string{
		"/etc d", "/etc/keep f:k", "/etc/mine f:m",
		"/lib l:usr/lib",
		"/new d", "/new/deep d", "/new/deep/file f:d",
		"/opt d",
		"/replace-me d", "/replace-me/inside f:i",
		"/usr d", "/usr/lib d", "/usr/lib/libc f:c", "/usr/lib/libm f:m",
		"/var d", "/var/opq d", "/var/opq/after f:a2", "/var/opq/new f:n",
	}, "\n")
	if got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}
	if err := s.rescan(); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.paths {
		if strings.Contains(p, ".wh.") || p == "/etc/gone" {
			t.Errorf("rescan kept %s", p)
		}
	}
}

func TestApplyLayerOwnersAndModes(t *testing.T) {
	root := t.TempDir()
	s := &stager{root: root, owners: map[string]owner{}}
	l1 := layerTar(t, dir("home/"), tent{name: "home/u/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		tent{name: "home/u/f", typ: tar.TypeReg, mode: 0o4755, uid: 1000, gid: 50, body: "x"},
		tent{name: "gone", typ: tar.TypeReg, mode: 0o644, uid: 7, gid: 7, body: "x"})
	l2 := layerTar(t, wh(".wh.gone"))
	for _, l := range [][]byte{l1, l2} {
		if err := s.applyLayer(context.Background(), bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.rescan(); err != nil {
		t.Fatal(err)
	}
	if o := s.owners["/home/u/f"]; o != (owner{1000, 50}) {
		t.Errorf("owner of /home/u/f = %+v", o)
	}
	if _, ok := s.owners["/gone"]; ok {
		t.Error("owner of a whited-out file kept")
	}
	fi, err := os.Lstat(filepath.Join(root, "home/u/f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestApplyLayerRefusesEscapes(t *testing.T) {
	cases := []struct {
		name string
		ents []tent
	}{
		{"dotdot", []tent{file("../escape", "x")}},
		{"dotdot-inner", []tent{file("a/../../escape", "x")}},
		{"whiteout-dotdot", []tent{wh("../.wh.escape")}},
		{"hardlink-out", []tent{{name: "l", typ: tar.TypeLink, link: "../escape"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "root")
			os.Mkdir(root, 0o755)
			sentinel := filepath.Join(base, "escape")
			os.WriteFile(sentinel, []byte("keep"), 0o644)
			s := &stager{root: root, owners: map[string]owner{}}
			if err := s.applyLayer(context.Background(), bytes.NewReader(layerTar(t, c.ents...))); err == nil {
				t.Error("no error")
			}
			if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" {
				t.Errorf("file outside the root changed: %q %v", b, err)
			}
		})
	}
	// Links pointing out are followed inside the root, never out of it.
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.Mkdir(root, 0o755)
	s := &stager{root: root, owners: map[string]owner{}}
	l := layerTar(t, tent{name: "up", typ: tar.TypeSymlink, link: "../../.."}, file("up/escape", "x"),
		tent{name: "abs", typ: tar.TypeSymlink, link: "/"}, file("abs/viaabs", "y"))
	if err := s.applyLayer(context.Background(), bytes.NewReader(l)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "escape")); err == nil {
		t.Error("wrote outside the root through a link")
	}
	for _, p := range []string{"escape", "viaabs"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s not written inside the root: %v", p, err)
		}
	}
}

// FuzzApplyLayer feeds arbitrary bytes as two layers over a small base and
// checks nothing outside the staging root changes and nothing panics.
func FuzzApplyLayer(f *testing.F) {
	f.Add(layerTar(f, dir("a/"), file("a/b", "x"), wh("a/.wh.b"), wh("a/.wh..wh..opq")))
	f.Add(layerTar(f, tent{name: "l", typ: tar.TypeSymlink, link: "/../.."}, file("l/x", "y"), wh("l/.wh.x")))
	f.Add(layerTar(f, file("f", "1"), tent{name: "h", typ: tar.TypeLink, link: "f"}, wh(".wh.f")))
	f.Add([]byte("not a tar"))
	scratch := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// One directory per run under the target's TempDir: t.TempDir in
		// fuzz workers stalls the coordinator on some hosts.
		base, err := os.MkdirTemp(scratch, "run")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(base)
		root := filepath.Join(base, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		sentinel := filepath.Join(base, "outside")
		if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := &stager{root: root, owners: map[string]owner{}}
		lower := layerTar(t, dir("etc/"), file("etc/x", "x"), tent{name: "lnk", typ: tar.TypeSymlink, link: "etc"})
		if err := s.applyLayer(context.Background(), bytes.NewReader(lower)); err != nil {
			t.Fatal(err)
		}
		_ = s.applyLayer(context.Background(), bytes.NewReader(data))
		_ = s.rescan()
		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("entries outside the root: %v", names)
		}
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" {
			t.Fatalf("outside file changed: %q %v", b, err)
		}
		for _, p := range s.paths {
			if !strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
				t.Fatalf("path %q", p)
			}
		}
	})
}

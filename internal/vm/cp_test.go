package vm

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/tarx"
)

// tarEntry is one entry of an archive a (hostile) guest sends.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func guestArchive(t *testing.T, es ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// snapshot records every name under dir with its mode and content (or link
// target), to show that a refused copy wrote nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			v += " -> " + l
		}
		out[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReceiveCopyRefusesHostileArchive plays a guest answering "mvmctl cp
// web:/var/log/app.log DST" with entries the user did not ask for. Every
// one is refused with an error naming the entry, and nothing is written:
// not the entries before it, not the one name asked for, no mode change.
func TestReceiveCopyRefusesHostileArchive(t *testing.T) {
	file := func(name, body string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, body: body} }
	dir := func(name string, mode int64) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: mode} }
	link := func(name, target string) tarEntry { return tarEntry{name: name, link: target, typ: tar.TypeSymlink} }
	cases := []struct {
		name      string
		guestPath string
		dst       string // relative to the user's directory; "." is it
		entries   []tarEntry
		want      string // in the error
	}{
		{"dotfile beside the name", "/var/log/app.log", ".", []tarEntry{file("app.log", "log"), file(".bashrc", "evil")}, `".bashrc"`},
		{"ssh key", "/var/log/app.log", ".", []tarEntry{file("app.log", "log"), dir(".ssh/", 0o700), file(".ssh/authorized_keys", "ssh-ed25519 AAAA")}, `".ssh/"`},
		{"git hook in an existing repo", "/var/log/app.log", ".", []tarEntry{file(".git/hooks/pre-commit", "#!/bin/sh\nevil\n")}, `".git/hooks/pre-commit"`},
		{"mode of an existing directory", "/var/log/app.log", ".", []tarEntry{dir(".git/", 0o777), file("app.log", "log")}, `".git/"`},
		{"other name than the source", "/var/log/app.log", ".", []tarEntry{file("other.log", "x")}, `"other.log"`},
		{"renamed target, extra entry", "/var/log/app.log", "out.log", []tarEntry{file("app.log", "log"), file("sibling", "x")}, `"sibling"`},
		{"directory source, entry beside it", "/var/log", ".", []tarEntry{dir("log/", 0o755), file("log/a", "a"), file("profile", "x")}, `"profile"`},
		{"absolute name", "/var/log", ".", []tarEntry{dir("log/", 0o755), file("/etc/passwd", "x")}, "absolute"},
		{"dotdot name", "/var/log", ".", []tarEntry{dir("log/", 0o755), file("log/../../x", "x")}, "escapes"},
		{"hard link", "/var/log", ".", []tarEntry{dir("log/", 0o755), file("log/a", "a"), {name: "log/h", link: "log/a", typ: tar.TypeLink}}, `"log/h"`},
		{"device node", "/var/log", ".", []tarEntry{dir("log/", 0o755), {name: "log/null", typ: tar.TypeChar}}, `"log/null"`},
		{"absolute symlink", "/var/log", ".", []tarEntry{dir("log/", 0o755), link("log/keys", "/root/.ssh/authorized_keys")}, `"log/keys"`},
		{"symlink out of the name", "/var/log", ".", []tarEntry{dir("log/", 0o755), link("log/rc", "../.bashrc")}, `"log/rc"`},
		{"symlink out through a loop", "/var/log", ".", []tarEntry{dir("log/", 0o755), link("log/d", "."), link("log/up", "d/d/../..")}, `"log/up"`},
		{"top symlink", "/var/log/app.log", ".", []tarEntry{link("app.log", ".bashrc")}, `"app.log"`},
		{"write through own symlink", "/var/log", ".", []tarEntry{dir("log/", 0o755), link("log/l", "sub"), file("log/l/x", "x")}, "symlink"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			home := filepath.Join(outer, "home")
			for _, d := range []string{"home/.git/hooks", "home/.ssh"} {
				if err := os.MkdirAll(filepath.Join(outer, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(filepath.Join(home, ".ssh"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(home, ".bashrc"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, outer)
			_, err := receiveCopy(bytes.NewReader(guestArchive(t, tc.entries...)), tc.guestPath, filepath.Join(home, tc.dst), CopyOutOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %s", err, tc.want)
			}
			if after := snapshot(t, outer); !reflect.DeepEqual(before, after) {
				t.Fatalf("a refused copy changed the host:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// TestReceiveCopyTrailingData: a guest that keeps sending after the
// archive's end marker is cut off, not read forever.
func TestReceiveCopyTrailingData(t *testing.T) {
	dst := t.TempDir()
	archive := guestArchive(t, tarEntry{name: "app.log", typ: tar.TypeReg, body: "log"})
	r := io.MultiReader(bytes.NewReader(archive), io.LimitReader(zeros{}, 1<<30))
	if _, err := receiveCopy(r, "/var/log/app.log", dst, CopyOutOptions{}); err == nil || !strings.Contains(err.Error(), "after the archive") {
		t.Fatalf("got %v, want an error about data after the archive", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "app.log")); err == nil {
		t.Fatal("a refused copy was written")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestReceiveCopy covers what a well-behaved guest sends: the one name,
// into DST or as DST, merged into an existing directory of that name.
func TestReceiveCopy(t *testing.T) {
	file := func(name, body string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, body: body} }
	dir := func(name string, mode int64) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: mode} }
	link := func(name, target string) tarEntry { return tarEntry{name: name, link: target, typ: tar.TypeSymlink} }
	cases := []struct {
		name      string
		guestPath string
		dst       string
		existing  map[string]string // relative to the user's directory: file content, or "/" for a directory
		entries   []tarEntry
		want      map[string]string // relative to the user's directory, as snapshot prints them
	}{
		{
			name: "file into a directory", guestPath: "/var/log/app.log", dst: ".",
			entries: []tarEntry{file("app.log", "log")},
			want:    map[string]string{"/app.log": "-rw-r--r-- log"},
		},
		{
			name: "file as a new name", guestPath: "/var/log/app.log", dst: "copy.log",
			entries: []tarEntry{file("app.log", "log")},
			want:    map[string]string{"/copy.log": "-rw-r--r-- log"},
		},
		{
			name: "file replaces a file", guestPath: "/var/log/app.log", dst: "copy.log",
			existing: map[string]string{"copy.log": "old"},
			entries:  []tarEntry{file("app.log", "new")},
			want:     map[string]string{"/copy.log": "-rw-r--r-- new"},
		},
		{
			name: "root of the guest", guestPath: "/", dst: ".",
			entries: []tarEntry{dir("root/", 0o755), file("root/etc", "x")},
			want:    map[string]string{"/root": "drwxr-xr-x", "/root/etc": "-rw-r--r-- x"},
		},
		{
			name: "tree with links inside", guestPath: "/srv/site/", dst: ".",
			entries: []tarEntry{dir("site/", 0o750), dir("site/sub/", 0o755), file("site/index", "i"), link("site/sub/up", "../index"), link("site/cur", "./sub")},
			want: map[string]string{
				"/site": "drwxr-x---", "/site/sub": "drwxr-xr-x", "/site/index": "-rw-r--r-- i",
				"/site/sub/up": "Lrwxrwxrwx -> ../index", "/site/cur": "Lrwxrwxrwx -> ./sub",
			},
		},
		{
			name: "merged into an existing directory", guestPath: "/srv/site", dst: ".",
			existing: map[string]string{"site": "/", "site/keep": "mine", "site/index": "old"},
			entries:  []tarEntry{dir("site/", 0o700), file("site/index", "new")},
			want:     map[string]string{"/site": "drwx------", "/site/keep": "-rw-r--r-- mine", "/site/index": "-rw-r--r-- new"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			for _, name := range slices.Sorted(maps.Keys(tc.existing)) { // parents first
				v := tc.existing[name]
				p := filepath.Join(home, name)
				var err error
				if v == "/" {
					err = os.Mkdir(p, 0o755)
				} else {
					err = os.WriteFile(p, []byte(v), 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if _, err := receiveCopy(bytes.NewReader(guestArchive(t, tc.entries...)), tc.guestPath, filepath.Join(home, tc.dst), CopyOutOptions{}); err != nil {
				t.Fatal(err)
			}
			got := snapshot(t, home)
			delete(got, "")
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("host has\n %v\nwant\n %v", got, tc.want)
			}
		})
	}
}

// TestReceiveCopySizeBound: a guest that sends more than the copy may write
// (a huge file, or very many small ones) is refused before the excess
// lands, and nothing reaches the destination.
func TestReceiveCopySizeBound(t *testing.T) {
	huge := func() io.Reader {
		// A header declaring 1 TiB, then endless zeros: nothing may try to
		// read it all.
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		_ = tw.WriteHeader(&tar.Header{Name: "app.log", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
		return io.MultiReader(&b, io.LimitReader(zeros{}, 1<<30))
	}
	var many []tarEntry
	many = append(many, tarEntry{name: "d/", typ: tar.TypeDir})
	for i := 0; i < 20; i++ {
		many = append(many, tarEntry{name: fmt.Sprintf("d/f%d", i), typ: tar.TypeReg, body: "x"})
	}
	for _, tc := range []struct {
		name      string
		r         func() io.Reader
		guestPath string
		o         CopyOutOptions
	}{
		{"declared size past the bound", huge, "/var/log/app.log", CopyOutOptions{MaxBytes: 1 << 20}},
		{"declared size past the free space", huge, "/var/log/app.log", CopyOutOptions{}},
		{"content past the bound", func() io.Reader {
			return bytes.NewReader(guestArchive(t, tarEntry{name: "app.log", typ: tar.TypeReg, body: strings.Repeat("a", 4096)}))
		}, "/var/log/app.log", CopyOutOptions{MaxBytes: 1000}},
		{"too many entries", func() io.Reader { return bytes.NewReader(guestArchive(t, many...)) }, "/srv/d", CopyOutOptions{MaxFiles: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			o := tc.o
			if o.MaxBytes == 0 {
				o.MaxBytes = copyOutBudget(dst)
			}
			_, err := receiveCopy(tc.r(), tc.guestPath, dst, o)
			if !errors.Is(err, tarx.ErrTooLarge) {
				t.Fatalf("got %v, want tarx.ErrTooLarge", err)
			}
			if ents, _ := os.ReadDir(dst); len(ents) != 0 {
				t.Fatalf("a refused copy left %v", ents)
			}
		})
	}
}

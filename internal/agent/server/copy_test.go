package server_test

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

// guestUser is the uid of the unprivileged guest user who plants symlinks.
const guestUser = 1000

// copyTree is a guest filesystem under a temp copy root: /etc holds the
// secrets, /tmp is world-writable, /home/u belongs to the guest user, and
// /outside is a directory beside the copy root.
type copyTree struct {
	root, outside string
}

func newCopyTree(t *testing.T) copyTree {
	t.Helper()
	base := t.TempDir()
	ct := copyTree{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{"root/etc", "root/tmp", "root/home/u", "root/usr/bin", "outside"} {
		must(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	must(t, os.Chmod(filepath.Join(ct.root, "tmp"), 0o1777))
	must(t, os.WriteFile(filepath.Join(ct.root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(ct.root, "etc", "shadow"), []byte("root:secret:::::::\n"), 0o600))
	return ct
}

// plant makes a symlink in the guest as the guest user would (owned by
// guestUser when the test can chown; else by the unprivileged test user,
// which the agent distrusts just the same).
func (ct copyTree) plant(t *testing.T, guestPath, target string) {
	t.Helper()
	p := filepath.Join(ct.root, guestPath)
	must(t, os.Symlink(target, p))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(p, guestUser, guestUser))
		must(t, os.Lchown(filepath.Dir(p), guestUser, guestUser))
	}
}

func oneFile(t *testing.T, name, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	must(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}))
	_, err := io.WriteString(tw, body)
	must(t, err)
	must(t, tw.Close())
	return b.Bytes()
}

// TestCopyRefusesSymlinkInRequestPath plays a guest user who plants
// symlinks where the host will copy, to make the root agent write or read
// through them: /etc/passwd by way of /tmp/x, or out of the copy root.
func TestCopyRefusesSymlinkInRequestPath(t *testing.T) {
	cases := []struct {
		name   string
		plant  func(ct copyTree) (guestPath, target string)
		op     string // proto.OpCopyIn or proto.OpCopyOut
		path   string // request path
		source string // copy-in: archive's one file name
	}{
		{"copy-in through a directory link", func(ct copyTree) (string, string) { return "tmp/x", filepath.Join(ct.root, "etc") }, proto.OpCopyIn, "/tmp/x/passwd", "passwd"},
		{"copy-in into a linked directory", func(ct copyTree) (string, string) { return "tmp/x", filepath.Join(ct.root, "etc") }, proto.OpCopyIn, "/tmp/x", "passwd"},
		{"copy-in onto a file link", func(ct copyTree) (string, string) { return "tmp/x", filepath.Join(ct.root, "etc", "passwd") }, proto.OpCopyIn, "/tmp/x", "x"},
		{"copy-in through a relative link", func(copyTree) (string, string) { return "home/u/l", "../../etc" }, proto.OpCopyIn, "/home/u/l/passwd", "passwd"},
		{"copy-in out of the copy root", func(ct copyTree) (string, string) { return "tmp/y", ct.outside }, proto.OpCopyIn, "/tmp/y/passwd", "passwd"},
		{"copy-out through a directory link", func(ct copyTree) (string, string) { return "tmp/x", filepath.Join(ct.root, "etc") }, proto.OpCopyOut, "/tmp/x/shadow", ""},
		{"copy-out out of the copy root", func(ct copyTree) (string, string) { return "home/u/l", ct.outside }, proto.OpCopyOut, "/home/u/l/secret", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct := newCopyTree(t)
			must(t, os.WriteFile(filepath.Join(ct.outside, "secret"), []byte("outside secret"), 0o600))
			link, target := tc.plant(ct)
			ct.plant(t, link, target)
			before := treeState(t, filepath.Dir(ct.root))
			_, c := authedTCP(t, server.Config{CopyRoot: ct.root})
			var err error
			var out bytes.Buffer
			switch tc.op {
			case proto.OpCopyIn:
				_, err = c.CopyIn(testCtx(t), proto.CopyRequest{Path: tc.path}, bytes.NewReader(oneFile(t, tc.source, "pwned\n")))
			case proto.OpCopyOut:
				_, err = c.CopyOut(testCtx(t), proto.CopyRequest{Path: tc.path}, &out)
			}
			if e, ok := proto.AsError(err); !ok || !strings.Contains(e.Message, "symlink") {
				t.Errorf("got %v, want an error about the symlink", err)
			}
			if strings.Contains(out.String(), "secret") {
				t.Errorf("copy-out streamed a file behind a planted symlink")
			}
			if after := treeState(t, filepath.Dir(ct.root)); after != before {
				t.Errorf("the copy changed the guest:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestCopyFollowsRootsOwnSymlinks: links that only root can have made, in
// directories only root can write (/bin -> usr/bin on merged-/usr
// systems), are still followed.
func TestCopyFollowsRootsOwnSymlinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root's symlinks are followed")
	}
	ct := newCopyTree(t)
	must(t, os.Symlink("usr/bin", filepath.Join(ct.root, "bin")))
	_, c := authedTCP(t, server.Config{CopyRoot: ct.root})
	if _, err := c.CopyIn(testCtx(t), proto.CopyRequest{Path: "/bin/tool"}, bytes.NewReader(oneFile(t, "src", "tool\n"))); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ct.root, "usr", "bin", "tool")); err != nil || string(b) != "tool\n" {
		t.Fatalf("copy-in through /bin: %q %v", b, err)
	}
	var out bytes.Buffer
	if _, err := c.CopyOut(testCtx(t), proto.CopyRequest{Path: "/bin/tool"}, &out); err != nil || !strings.Contains(out.String(), "tool\n") {
		t.Fatalf("copy-out through /bin: %v", err)
	}
	// Root's link in a world-writable directory is not: anyone could have
	// swapped it.
	must(t, os.Symlink(filepath.Join(ct.root, "etc"), filepath.Join(ct.root, "tmp", "r")))
	_, err := c.CopyIn(testCtx(t), proto.CopyRequest{Path: "/tmp/r/passwd"}, bytes.NewReader(oneFile(t, "passwd", "pwned\n")))
	if e, ok := proto.AsError(err); !ok || !strings.Contains(e.Message, "symlink") {
		t.Fatalf("link in /tmp: got %v", err)
	}
}

// TestCopyInUserOwnsImpliedDirectories: "mvmctl cp --user" of an archive
// that names a/b/c without entries for a and a/b creates them owned by
// that user, not root.
func TestCopyInUserOwnsImpliedDirectories(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	ct := newCopyTree(t)
	_, c := authedTCP(t, server.Config{CopyRoot: ct.root})
	if _, err := c.CopyIn(testCtx(t), proto.CopyRequest{Path: "/home/u", User: "4321:99"}, bytes.NewReader(oneFile(t, "a/b/c", "x"))); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"a", "a/b", "a/b/c"} {
		fi, err := os.Lstat(filepath.Join(ct.root, "home", "u", rel))
		if err != nil {
			t.Fatal(err)
		}
		if uid, gid := owner(fi); uid != 4321 || gid != 99 {
			t.Errorf("%s belongs to %d:%d, want 4321:99", rel, uid, gid)
		}
	}
}

// treeState lists every name under dir with its mode and content.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b.WriteString(strings.TrimPrefix(p, dir) + " " + fi.Mode().String())
		if fi.Mode().IsRegular() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b.WriteString(" " + string(c))
		}
		b.WriteString("; ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func owner(fi fs.FileInfo) (uid, gid int) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1
	}
	return int(st.Uid), int(st.Gid)
}

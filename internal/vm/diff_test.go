package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func TestCompareTrees(t *testing.T) {
	d := func(p string, mode uint32) proto.DiffEntry {
		return proto.DiffEntry{Path: p, Type: proto.DiffDir, Mode: mode}
	}
	f := func(p, sum string, size int64) proto.DiffEntry {
		return proto.DiffEntry{Path: p, Type: proto.DiffFile, Mode: 0o644, Size: size, MtimeNS: 1, SHA256: sum}
	}
	base := []proto.DiffEntry{
		d("/", 0o755), d("/etc", 0o755), f("/etc/a", "", 3), f("/etc/b", "", 3), f("/etc/same", "", 4),
		d("/old", 0o755), d("/old/sub", 0o755), f("/old/sub/x", "", 1),
		{Path: "/bin/sh", Type: proto.DiffSymlink, Mode: 0o777, Link: "busybox"},
		d("/bin", 0o755), d("/proc", 0o555), f("/proc/junk", "", 1),
		d("/root", 0o700),
	}
	hashed := f("/etc/same", strings.Repeat("0", 64), 4)
	hashed.MtimeNS = 99 // rewritten with the same bytes
	cur := []proto.DiffEntry{
		d("/", 0o755), d("/etc", 0o755),
		f("/etc/a", "", 4), // content
		{Path: "/etc/b", Type: proto.DiffFile, Mode: 0o600, Size: 3, MtimeNS: 1, UID: 5}, // mode+owner
		hashed,
		{Path: "/bin/sh", Type: proto.DiffSymlink, Mode: 0o777, Link: "dash"},
		d("/bin", 0o755),
		d("/root", 0o700), d("/root/new", 0o755), f("/root/new/file", "", 1),
		d("/proc", 0o555), // its contents are excluded on both sides
	}
	// Only one side hashed: the size and mtime decide.
	base = append(base, f("/etc/same", strings.Repeat("0", 64), 4))
	got := CompareTrees(base, cur, []string{"/proc"})
	want := []Change{
		{Kind: "C", Path: "/", What: []string{"entries"}},
		{Kind: "C", Path: "/bin/sh", What: []string{"link"}},
		{Kind: "C", Path: "/etc/a", What: []string{"content"}},
		{Kind: "C", Path: "/etc/b", What: []string{"mode", "owner"}},
		{Kind: "D", Path: "/old"},
		{Kind: "C", Path: "/root", What: []string{"entries"}},
		{Kind: "A", Path: "/root/new"},
		{Kind: "A", Path: "/root/new/file"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got %+v\nwant %+v", got, want)
	}
	if got := CompareTrees(cur, cur, nil); len(got) != 0 {
		t.Fatalf("a tree differs from itself: %+v", got)
	}
	// Type changes say nothing else.
	got = CompareTrees([]proto.DiffEntry{d("/", 0o755), d("/x", 0o755)}, []proto.DiffEntry{d("/", 0o755), f("/x", "", 1)}, nil)
	if len(got) != 1 || got[0].Kind != "C" || !reflect.DeepEqual(got[0].What, []string{"type"}) {
		t.Fatalf("type change: %+v", got)
	}
}

func TestParseDebugfsLs(t *testing.T) {
	out := "debugfs 1.47.0 (5-Feb-2023)\n" +
		"debugfs: ls -p \"/\"\n/2/040755/0/0/.//\n/2/040755/0/0/..//\n/12/041777/0/0/tmp//\n/13/100644/0/0/f/12/\n\n" +
		"debugfs: ls -p \"/tmp\"\n/12/041777/0/0/.//\n/2/040755/0/0/..//\n/14/120777/1/2/l/7/\n/15/104755/0/0/su/3/\n"
	es, err := parseDebugfsLs([]byte(out), []string{"/", "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.DiffEntry{
		{Path: "/", Type: proto.DiffDir, Mode: 0o755},
		{Path: "/tmp", Type: proto.DiffDir, Mode: 0o1777},
		{Path: "/f", Type: proto.DiffFile, Mode: 0o644, Size: 12},
		{Path: "/tmp/l", Type: proto.DiffSymlink, Mode: 0o777, UID: 1, GID: 2, Size: 7},
		{Path: "/tmp/su", Type: proto.DiffFile, Mode: 0o4755, Size: 3},
	}
	if !reflect.DeepEqual(es, want) {
		t.Fatalf("got  %+v\nwant %+v", es, want)
	}
	if _, err := parseDebugfsLs([]byte("debugfs: ls -p \"/\"\n/1/zz/0/0/x/1/\n"), []string{"/"}); err == nil {
		t.Fatal("accepted a bad mode")
	}
	if _, err := parseDebugfsLs([]byte("debugfs: ls -p \"/\"\n"), []string{"/", "/a"}); err == nil {
		t.Fatal("accepted a missing listing")
	}
}

// TestReadExt4Tree builds a small ext4 image and reads it back.
func TestReadExt4Tree(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs)", tool)
		}
	}
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc", "deep"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc", "motd"), []byte("hello"), 0o644))
	must(os.WriteFile(filepath.Join(src, "etc", "deep", "su"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(src, "etc", "deep", "su"), 0o755|os.ModeSetuid))
	must(os.Mkdir(filepath.Join(src, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(src, "tmp"), 0o777|os.ModeSticky))
	must(os.Symlink("motd", filepath.Join(src, "etc", "greeting")))
	img := filepath.Join(t.TempDir(), "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	es, err := readExt4Tree(t.Context(), img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]proto.DiffEntry{}
	for _, e := range es {
		got[e.Path] = e
	}
	sum := sha256.Sum256([]byte("hello"))
	if e := got["/etc/motd"]; e.Type != proto.DiffFile || e.Size != 5 || e.SHA256 != hex.EncodeToString(sum[:]) || e.MtimeNS == 0 {
		t.Errorf("/etc/motd = %+v", e)
	}
	if e := got["/etc/deep/su"]; e.Mode != 0o4755 {
		t.Errorf("setuid lost: %+v", e)
	}
	if e := got["/tmp"]; e.Type != proto.DiffDir || e.Mode != 0o1777 {
		t.Errorf("sticky lost: %+v", e)
	}
	if e := got["/etc/greeting"]; e.Type != proto.DiffSymlink || e.Link != "motd" {
		t.Errorf("symlink: %+v", e)
	}
	if _, ok := got["/lost+found"]; !ok || got["/"].Type != proto.DiffDir {
		t.Errorf("root or lost+found missing: %v", got)
	}
}

// TestCollectDiffBounds plays a guest that sends an endless listing: the
// host keeps at most maxDiffEntries entries and maxDiffPathBytes of names,
// stops reading at the first one past either bound and says it cut.
func TestCollectDiffBounds(t *testing.T) {
	long := strings.Repeat("x", proto.MaxDiffLine/4)
	cases := []struct {
		name      string
		send      int // entries the guest offers
		path      func(i int) string
		wantKept  int
		truncated bool
	}{
		{"within the bounds", 1000, func(i int) string { return fmt.Sprintf("/f%d", i) }, 1000, false},
		{"exactly the entry bound", maxDiffEntries, func(i int) string { return fmt.Sprintf("/f%d", i) }, maxDiffEntries, false},
		{"too many entries", 10 * maxDiffEntries, func(i int) string { return fmt.Sprintf("/f%d", i) }, maxDiffEntries, true},
		{"too many bytes", 10 * maxDiffPathBytes / len(long), func(i int) string { return fmt.Sprintf("/%d%s", i, long) }, -1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			offered := 0
			guest := func(_ context.Context, _ proto.DiffRequest, fn func(proto.DiffEntry) error) (*proto.DiffResult, error) {
				for i := 0; i < tc.send; i++ {
					offered++
					if err := fn(proto.DiffEntry{Path: tc.path(i), Type: proto.DiffFile, Mode: 0o644}); err != nil {
						return nil, fmt.Errorf("agent diff: %w", err)
					}
				}
				return &proto.DiffResult{Entries: tc.send}, nil
			}
			cur, res, truncated, err := collectDiff(context.Background(), guest, proto.DiffRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if res == nil {
				t.Fatal("no result")
			}
			var bytes int
			for _, e := range cur {
				bytes += len(e.Path)
			}
			if truncated != tc.truncated || len(cur) > maxDiffEntries || bytes > maxDiffPathBytes {
				t.Fatalf("kept %d entries (%d bytes of paths), truncated %v; want truncated %v within %d entries, %d bytes",
					len(cur), bytes, truncated, tc.truncated, maxDiffEntries, maxDiffPathBytes)
			}
			if tc.wantKept >= 0 && len(cur) != tc.wantKept {
				t.Fatalf("kept %d entries, want %d", len(cur), tc.wantKept)
			}
			if tc.truncated && offered != len(cur)+1 {
				t.Fatalf("read %d entries after keeping %d: the host must stop at the first one past the bound", offered, len(cur))
			}
		})
	}
}

// TestDiffReportTruncated: a cut listing is said to be cut, in text and
// JSON, and what the guest did not send is not reported deleted.
func TestDiffReportTruncated(t *testing.T) {
	d := func(p string) proto.DiffEntry { return proto.DiffEntry{Path: p, Type: proto.DiffDir, Mode: 0o755} }
	base := []proto.DiffEntry{d("/"), d("/etc"), d("/usr"), d("/var")}
	cur := []proto.DiffEntry{d("/"), d("/etc"), d("/new")}
	cases := []struct {
		name      string
		truncated bool
		want      []Change
		json      string
		err       string
	}{
		{"complete", false, []Change{
			{Kind: "C", Path: "/", What: []string{"entries"}}, {Kind: "A", Path: "/new"}, {Kind: "D", Path: "/usr"}, {Kind: "D", Path: "/var"},
		}, `"truncated":false`, ""},
		{"cut", true, []Change{
			{Kind: "C", Path: "/", What: []string{"entries"}}, {Kind: "A", Path: "/new"},
		}, `"truncated":true`, "output cut after 3 entries: the guest sent more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := diffReport("web", "img", base, cur, &proto.DiffResult{}, tc.truncated)
			if !reflect.DeepEqual(rep.Changes, tc.want) {
				t.Fatalf("changes %+v, want %+v", rep.Changes, tc.want)
			}
			b, err := json.Marshal(rep)
			if err != nil || !strings.Contains(string(b), tc.json) {
				t.Fatalf("json %s (%v), want %s", b, err, tc.json)
			}
			if err := rep.Err(); (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Err() = %v, want %q", err, tc.err)
			}
		})
	}
}

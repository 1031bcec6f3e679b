package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

func TestDiffListsTree(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "proc", "1"), 0o555))
	must(t, os.WriteFile(filepath.Join(root, "etc", "old"), []byte("image"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "new"), []byte("guest wrote this"), 0o600))
	must(t, os.Symlink("new", filepath.Join(root, "etc", "link")))
	// "old" predates the cutoff, "new" is after it and gets hashed.
	cutoff := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(filepath.Join(root, "etc", "old"), cutoff.Add(-time.Hour), cutoff.Add(-time.Hour)))
	sum := sha256.Sum256([]byte("guest wrote this"))

	forEachTransport(t, server.Config{CopyRoot: root}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		got := map[string]proto.DiffEntry{}
		var order []string
		res, err := c.Diff(testCtx(t), proto.DiffRequest{Exclude: []string{"/proc"}, HashNewerThanNS: cutoff.UnixNano()}, func(e proto.DiffEntry) error {
			got[e.Path] = e
			order = append(order, e.Path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Entries != len(order) || res.Hashed != 1 || len(res.Errors) != 0 {
			t.Fatalf("result %+v for %d entries", res, len(order))
		}
		if order[0] != "/" {
			t.Fatalf("walk starts at %q", order[0])
		}
		for _, p := range []string{"/proc", "/proc/1"} {
			if _, ok := got[p]; ok {
				t.Errorf("%s listed despite the exclude", p)
			}
		}
		if e := got["/etc/new"]; e.Type != proto.DiffFile || e.Mode != 0o600 || e.Size != 16 || e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("/etc/new = %+v", e)
		}
		if e := got["/etc/old"]; e.SHA256 != "" || e.Size != 5 {
			t.Errorf("/etc/old (older than the cutoff) = %+v", e)
		}
		if e := got["/etc/link"]; e.Type != proto.DiffSymlink || e.Link != "new" {
			t.Errorf("/etc/link = %+v", e)
		}
		if e := got["/etc"]; e.Type != proto.DiffDir || e.Mode != 0o755 {
			t.Errorf("/etc = %+v", e)
		}

		// A sub-root, and refusals.
		n := 0
		if _, err := c.Diff(testCtx(t), proto.DiffRequest{Root: "/etc"}, func(proto.DiffEntry) error { n++; return nil }); err != nil || n != 4 {
			t.Fatalf("root /etc: %d entries, %v", n, err)
		}
		_, err = c.Diff(testCtx(t), proto.DiffRequest{Root: "/nope"}, func(proto.DiffEntry) error { return nil })
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeNotFound {
			t.Fatalf("missing root: %v", err)
		}
		_, err = c.Diff(testCtx(t), proto.DiffRequest{Root: "etc"}, func(proto.DiffEntry) error { return nil })
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeBadRequest {
			t.Fatalf("relative root: %v", err)
		}
	})
}

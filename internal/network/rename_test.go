package network

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

func TestRename(t *testing.T) {
	dir := t.TempDir()
	m := NewManager(filepath.Join(dir, "share"), filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	n := &Network{Name: "iso", Mode: ModeBridge, Subnet: "10.88.7.0/24", Gateway: "10.88.7.1", Attached: map[string]*Attachment{
		"pool-0000aaaa": {VM: "pool-0000aaaa", IP: "10.88.7.2", MAC: "02:00:00:00:00:02", TAP: "tmvm1"},
		"other":         {VM: "other", IP: "10.88.7.3", MAC: "02:00:00:00:00:03", TAP: "tmvm2"},
	}}
	if err := m.Store.Put(n); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := m.Rename(ctx, "iso", "pool-0000aaaa", "mine")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attach.VM != "mine" || l.Attach.IP != "10.88.7.2" || l.Attach.TAP != "tmvm1" {
		t.Fatalf("lease after rename: %+v", l.Attach)
	}
	if g := l.Guest(); len(g.Hosts) != 1 || !strings.Contains(strings.Join(g.Hosts[0].Names, " "), "mine.iso") {
		t.Fatalf("guest hosts after rename: %+v", g.Hosts)
	}
	got, err := m.Get("iso")
	if err != nil || got.Attached["mine"] == nil || got.Attached["pool-0000aaaa"] != nil || got.Attached["mine"].VM != "mine" {
		t.Fatalf("record after rename: %+v %v", got, err)
	}
	for _, tt := range []struct{ net, from, to, want string }{
		{"iso", "gone", "x", "not attached"},
		{"iso", "mine", "other", "already attached"},
		{"nope", "mine", "x", "nope"},
		{ModeUser, "mine", "x", "nothing to rename"},
	} {
		if _, err := m.Rename(ctx, tt.net, tt.from, tt.to); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Rename(%s, %s, %s) = %v, want %q", tt.net, tt.from, tt.to, err, tt.want)
		}
	}
}

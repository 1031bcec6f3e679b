package vm

import (
	"context"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
)

// DiffExcludes are guest paths a diff never reports: kernel and runtime
// filesystems, scratch space and the config drive.
var DiffExcludes = []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/mnt/config"}

// Change kinds, as docker diff prints them.
const (
	ChangeAdded   = "A"
	ChangeChanged = "C"
	ChangeDeleted = "D"
)

// Change is one difference between a VM's filesystem and its image.
type Change struct {
	Kind string `json:"kind"` // A, C or D
	Path string `json:"path"`
	// What says what changed for C: content, mode, owner, type, link.
	What []string `json:"what,omitempty"`
}

// DiffReport is the answer of Diff.
type DiffReport struct {
	VM      string   `json:"vm"`
	Image   string   `json:"image"`
	Changes []Change `json:"changes"`
	// Unreadable lists guest paths the agent could not read (a few).
	Unreadable []string `json:"unreadable,omitempty"`
}

// Diff compares VM name's filesystem, as its agent sees it now, with the
// image it booted from, as the cached root filesystem holds it.
func (m *Manager) Diff(ctx context.Context, name string) (*DiffReport, error) {
	rec, err := m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec.State != string(backend.StateRunning) {
		return nil, fmt.Errorf("cannot diff: VM %q is %s; start it first", name, rec.State)
	}
	if rec.Boot == nil || rec.Boot.Rootfs == "" {
		return nil, fmt.Errorf("cannot diff %s: its image has no root filesystem image to compare with", name)
	}
	base, err := m.diffBaseline(ctx, rec.Boot.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("diff %s: image %s: %w", name, rec.Image, err)
	}
	c, err := m.Agent(ctx, name, "diff")
	if err != nil {
		return nil, err
	}
	// Files newer than everything in the image were written in the guest:
	// hash those, so a rewrite with the same content is no change.
	var newest int64
	for _, e := range base {
		newest = max(newest, e.MtimeNS)
	}
	var cur []proto.DiffEntry
	res, err := c.Diff(ctx, proto.DiffRequest{Exclude: DiffExcludes, HashNewerThanNS: newest, HashLimit: baseHashLimit},
		func(e proto.DiffEntry) error { cur = append(cur, e); return nil })
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", name, err)
	}
	return &DiffReport{VM: name, Image: rec.Image, Changes: CompareTrees(base, cur, DiffExcludes), Unreadable: res.Errors}, nil
}

// CompareTrees reports how cur differs from base, sorted by path. Entries
// at or below excludes are ignored on both sides. Like docker diff: a
// deleted directory hides what it held, and a directory that gained or lost
// an entry is changed.
func CompareTrees(base, cur []proto.DiffEntry, excludes []string) []Change {
	excluded := func(p string) bool {
		for _, x := range excludes {
			if p == x || strings.HasPrefix(p, strings.TrimSuffix(x, "/")+"/") {
				return true
			}
		}
		return false
	}
	index := func(es []proto.DiffEntry) map[string]proto.DiffEntry {
		m := make(map[string]proto.DiffEntry, len(es))
		for _, e := range es {
			if !excluded(e.Path) {
				m[e.Path] = e
			}
		}
		return m
	}
	b, c := index(base), index(cur)
	changes := map[string]*Change{}
	touchParent := func(p string) {
		if p == "/" {
			return
		}
		dir := path.Dir(p)
		if ch := changes[dir]; ch != nil {
			if ch.Kind == ChangeChanged && !slices.Contains(ch.What, "entries") {
				ch.What = append(ch.What, "entries")
			}
			return
		}
		if _, ok := c[dir]; !ok {
			return
		}
		if _, ok := b[dir]; ok {
			changes[dir] = &Change{Kind: ChangeChanged, Path: dir, What: []string{"entries"}}
		}
	}
	for p, ce := range c {
		be, ok := b[p]
		if !ok {
			changes[p] = &Change{Kind: ChangeAdded, Path: p}
			touchParent(p)
			continue
		}
		if what := changed(be, ce); len(what) > 0 {
			if prev := changes[p]; prev != nil {
				prev.What = append(what, prev.What...)
			} else {
				changes[p] = &Change{Kind: ChangeChanged, Path: p, What: what}
			}
		}
	}
	for p := range b {
		if _, ok := c[p]; ok {
			continue
		}
		if _, gone := b[path.Dir(p)]; gone && p != "/" {
			if _, still := c[path.Dir(p)]; !still {
				continue // its directory is deleted and says it all
			}
		}
		changes[p] = &Change{Kind: ChangeDeleted, Path: p}
		touchParent(p)
	}
	out := make([]Change, 0, len(changes))
	for _, ch := range changes {
		slices.Sort(ch.What)
		out = append(out, *ch)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// changed lists what differs between one path's two versions. Directory
// mtimes and sizes say nothing useful and are ignored; a regular file's
// content compares by hash when both sides have one, else by size and mtime.
func changed(b, c proto.DiffEntry) []string {
	if b.Type != c.Type {
		return []string{"type"}
	}
	var what []string
	if b.Mode != c.Mode {
		what = append(what, "mode")
	}
	if b.UID != c.UID || b.GID != c.GID {
		what = append(what, "owner")
	}
	switch b.Type {
	case proto.DiffFile:
		switch {
		case b.Size != c.Size:
			what = append(what, "content")
		case b.SHA256 != "" && c.SHA256 != "":
			if b.SHA256 != c.SHA256 {
				what = append(what, "content")
			}
		case b.MtimeNS != c.MtimeNS:
			what = append(what, "content")
		}
	case proto.DiffSymlink:
		if b.Link != c.Link {
			what = append(what, "link")
		}
	case proto.DiffChar, proto.DiffBlock:
		if b.Rdev != 0 && c.Rdev != 0 && b.Rdev != c.Rdev {
			what = append(what, "device")
		}
	}
	return what
}

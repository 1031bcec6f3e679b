package vm

import (
	"context"
	"errors"
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
	// Truncated says the guest sent more than the host reads (see
	// maxDiffEntries): Changes covers the entries received, and no
	// deletions are reported since what was not received is unknown.
	Truncated bool `json:"truncated"`
	// Received counts the guest's entries that were compared.
	Received int `json:"received"`
}

// Err is non-nil when the report is incomplete: the CLI prints the report
// and then fails with it.
func (r *DiffReport) Err() error {
	if !r.Truncated {
		return nil
	}
	return fmt.Errorf("output cut after %d entries: the guest sent more (deletions are not shown)", r.Received)
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
	req := proto.DiffRequest{Exclude: DiffExcludes, HashNewerThanNS: newest, HashLimit: baseHashLimit}
	cur, res, truncated, err := collectDiff(ctx, c.Diff, req)
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", name, err)
	}
	return diffReport(name, rec.Image, base, cur, res, truncated), nil
}

// diffReport compares what the guest sent with the image. A cut listing
// says nothing of the paths it did not reach: only base entries the guest
// did send are compared, so none is reported deleted.
func diffReport(name, image string, base, cur []proto.DiffEntry, res *proto.DiffResult, truncated bool) *DiffReport {
	if truncated {
		seen := make(map[string]bool, len(cur))
		for _, e := range cur {
			seen[e.Path] = true
		}
		var kept []proto.DiffEntry
		for _, e := range base {
			if seen[e.Path] {
				kept = append(kept, e)
			}
		}
		base = kept
	}
	unreadable := res.Errors
	if len(unreadable) > maxUnreadable {
		unreadable = append(unreadable[:maxUnreadable:maxUnreadable], fmt.Sprintf("(and %d more)", len(res.Errors)-maxUnreadable))
	}
	return &DiffReport{
		VM: name, Image: image, Changes: CompareTrees(base, cur, DiffExcludes),
		Unreadable: unreadable, Truncated: truncated, Received: len(cur),
	}
}

// Bounds on what the host keeps of a guest's listing: a root filesystem
// has tens of thousands of entries, a hostile guest may send endless ones.
const (
	maxDiffEntries   = 200_000
	maxDiffPathBytes = 64 << 20 // paths, link targets and hashes together
	maxUnreadable    = 100
)

// errDiffCut stops reading a listing past the bounds.
var errDiffCut = errors.New("diff listing cut")

// diffLister is the agent's Diff: it calls fn for each entry the guest sends.
type diffLister func(ctx context.Context, req proto.DiffRequest, fn func(proto.DiffEntry) error) (*proto.DiffResult, error)

// collectDiff reads the guest's listing, keeping at most maxDiffEntries
// entries and maxDiffPathBytes of their strings. At the first entry past
// either it stops reading (the stream is dropped) and reports truncated.
func collectDiff(ctx context.Context, list diffLister, req proto.DiffRequest) (cur []proto.DiffEntry, res *proto.DiffResult, truncated bool, err error) {
	var size int
	res, err = list(ctx, req, func(e proto.DiffEntry) error {
		n := len(e.Path) + len(e.Link) + len(e.SHA256)
		if len(cur) >= maxDiffEntries || size+n > maxDiffPathBytes {
			truncated = true
			return errDiffCut
		}
		size += n
		cur = append(cur, e)
		return nil
	})
	if truncated && errors.Is(err, errDiffCut) {
		return cur, &proto.DiffResult{Entries: len(cur)}, true, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	if res == nil {
		res = &proto.DiffResult{}
	}
	return cur, res, false, nil
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

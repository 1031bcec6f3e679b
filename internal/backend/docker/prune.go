package docker

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"time"
)

// LabelDigest on an imported image is the mvm image digest it was made from.
const LabelDigest = "mvm.digest"

// ManagedImage is a local image mvm imported (label mvm.managed=1).
type ManagedImage struct {
	ID     string   `json:"id"`
	Refs   []string `json:"refs"`   // repo:tag, e.g. mvm-image:<digest12>-f1
	Digest string   `json:"digest"` // mvm.digest label, "sha256:<hex>"
	Bytes  int64    `json:"bytes"`
	// Created is when the image was imported.
	Created time.Time `json:"created"`
	// InUse: a container (running or not) was created from it; the daemon
	// refuses to remove it, and prune leaves it.
	InUse bool `json:"in_use"`
}

// ListImages returns our imported images, sorted by first reference. Images
// without the mvm.managed label are never listed.
func ListImages(ctx context.Context) ([]ManagedImage, error) {
	e, err := newEngine()
	if err != nil {
		return nil, err
	}
	return e.listImages(ctx)
}

// PruneImages removes our imported images (label mvm.managed=1) whose
// mvm.digest is not kept, e.g. the digests still in the image cache, and
// returns the references removed. Images a container uses are left alone.
func PruneImages(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	e, err := newEngine()
	if err != nil {
		return nil, err
	}
	return e.pruneImages(ctx, keep)
}

func (e *engine) listImages(ctx context.Context) ([]ManagedImage, error) {
	var imgs []struct {
		ID       string            `json:"Id"`
		RepoTags []string          `json:"RepoTags"`
		Labels   map[string]string `json:"Labels"`
		Size     int64             `json:"Size"`
		Created  int64             `json:"Created"` // unix seconds
	}
	f := `{"label":["` + LabelManaged + `=1"]}`
	if err := e.do(ctx, http.MethodGet, "/images/json", url.Values{"filters": {f}}, nil, "", &imgs); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	// Containers name their image by ID; any container counts, not only
	// ours, since the daemon refuses to remove an image any container uses.
	var ctrs []struct {
		ImageID string `json:"ImageID"`
	}
	if err := e.do(ctx, http.MethodGet, "/containers/json", url.Values{"all": {"1"}}, nil, "", &ctrs); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range ctrs {
		used[c.ImageID] = true
	}
	out := make([]ManagedImage, 0, len(imgs))
	for _, im := range imgs {
		if im.Labels[LabelManaged] != "1" {
			continue // the daemon filtered already; this guards a fake or an old daemon
		}
		refs := []string{}
		for _, r := range im.RepoTags {
			if r != "<none>:<none>" {
				refs = append(refs, r)
			}
		}
		out = append(out, ManagedImage{ID: im.ID, Refs: refs, Digest: im.Labels[LabelDigest], Bytes: im.Size, Created: time.Unix(im.Created, 0), InUse: used[im.ID]})
	}
	sort.Slice(out, func(i, j int) bool { return firstRef(out[i]) < firstRef(out[j]) })
	return out, nil
}

func firstRef(m ManagedImage) string {
	if len(m.Refs) > 0 {
		return m.Refs[0]
	}
	return m.ID
}

func (e *engine) pruneImages(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	imgs, err := e.listImages(ctx)
	if err != nil {
		return nil, err
	}
	removed := []string{}
	var firstErr error
	for _, im := range imgs {
		if im.InUse || keep(im.Digest) {
			continue
		}
		refs := im.Refs
		if len(refs) == 0 {
			refs = []string{im.ID} // untagged: remove by ID
		}
		for _, ref := range refs {
			err := e.do(ctx, http.MethodDelete, "/images/"+url.PathEscape(ref), nil, nil, "", nil)
			if err != nil && !isStatus(err, http.StatusNotFound) {
				if firstErr == nil {
					firstErr = fmt.Errorf("remove image %s: %w", ref, err)
				}
				continue
			}
			removed = append(removed, ref)
		}
	}
	return removed, firstErr
}

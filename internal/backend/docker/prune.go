package docker

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// PruneImages removes our imported images (label mvm.managed=1) whose
// mvm.digest is not kept, e.g. the digests still in the image cache, and
// returns the references removed. Images a container still uses are left
// (the daemon refuses) and reported in the error.
func PruneImages(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	e, err := newEngine()
	if err != nil {
		return nil, err
	}
	return e.pruneImages(ctx, keep)
}

func (e *engine) pruneImages(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	var imgs []struct {
		ID       string            `json:"Id"`
		RepoTags []string          `json:"RepoTags"`
		Labels   map[string]string `json:"Labels"`
	}
	f := `{"label":["` + LabelManaged + `=1"]}`
	if err := e.do(ctx, http.MethodGet, "/images/json", url.Values{"filters": {f}}, nil, "", &imgs); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var removed []string
	var firstErr error
	for _, im := range imgs {
		if keep(im.Labels["mvm.digest"]) {
			continue
		}
		for _, ref := range im.RepoTags {
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

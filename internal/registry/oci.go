package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// maxManifest bounds what GetManifest reads: the distribution spec lets
// registries refuse manifests over 4 MiB, and ours are far smaller.
const maxManifest = 4 << 20

// ociStore is one repository of an OCI distribution registry.
type ociStore struct {
	ref     registry.Reference
	repo    *remote.Repository
	timeout time.Duration
}

func openOCI(addr string, o Options) (*ociStore, error) {
	const want = "want HOST[:PORT]/NAME, e.g. localhost:5000/templates/web"
	ref, err := registry.ParseReference(addr)
	if err != nil {
		return nil, fmt.Errorf("registry address %q: %w (%s)", addr, err, want)
	}
	if ref.Reference != "" {
		return nil, fmt.Errorf("registry address %q names a tag or digest; give the repository alone (%s)", addr, want)
	}
	// Docker's rule: without a '.', a ':' or "localhost" the first part
	// is a path segment, not a host ("templates/web" is a typo, not a
	// registry called "templates").
	if !strings.ContainsAny(ref.Registry, ".:") && ref.Registry != "localhost" {
		return nil, fmt.Errorf("registry address %q has no registry host (%s)", addr, want)
	}
	if o.Insecure && !isLoopback(splitHost(ref.Registry)) {
		return nil, fmt.Errorf("registry %s: plain HTTP (insecure) is allowed only for a loopback registry (localhost, 127.0.0.1, ::1); a remote one must use TLS (trust a private CA with a CA file)", ref.Registry)
	}
	if o.Password != "" && o.Username == "" {
		return nil, fmt.Errorf("registry %s: a password needs a username", ref.Registry)
	}

	cred, err := ociCredential(o, ref.Registry)
	if err != nil {
		return nil, err
	}
	hc := o.HTTPClient
	if hc == nil {
		tr, err := transport(o)
		if err != nil {
			return nil, err
		}
		// Retries 429, 5xx and dial timeouts with backoff; a refused
		// connection fails at once.
		hc = &http.Client{Transport: retry.NewTransport(tr)}
	}
	client := &auth.Client{Client: hc, Credential: cred, Cache: auth.NewCache(), ClientID: "mvm"}
	client.SetUserAgent("mvm")
	return &ociStore{
		ref: ref,
		repo: &remote.Repository{
			Client:    client,
			Reference: ref,
			PlainHTTP: o.Insecure,
			// A registry without the referrers API gets oras's
			// client-side index (tag sha256-<hex>); replacing it must
			// not need DELETE, which many registries disable.
			SkipReferrersGC:  true,
			MaxMetadataBytes: maxManifest,
		},
		timeout: o.timeout(),
	}, nil
}

// ociCredential answers the registry's challenge: explicit options first,
// else whatever `docker login` stored (config.json or its helpers), which
// is only read when the registry asks.
func ociCredential(o Options, host string) (auth.CredentialFunc, error) {
	if o.Username != "" {
		return auth.StaticCredential(host, auth.Credential{Username: o.Username, Password: o.Password}), nil
	}
	st, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Docker credentials: %w", err)
	}
	return credentials.Credential(st), nil
}

func (s *ociStore) String() string { return s.ref.Registry + "/" + s.ref.Repository }

func (s *ociStore) HasBlob(ctx context.Context, dgst string) (bool, error) {
	if _, err := hexOf(dgst); err != nil {
		return false, fmt.Errorf("%s: %w", s, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.repo.Blobs().Resolve(ctx, dgst)
	if err != nil {
		err = s.wrap("blob "+dgst, err)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (s *ociStore) PutBlob(ctx context.Context, d Descriptor, r io.Reader) error {
	if _, err := hexOf(d.Digest); err != nil {
		return fmt.Errorf("%s: %w", s, err)
	}
	g := newStallGuard(ctx, s.timeout)
	defer g.stop()
	// The registry checks the digest when the upload is closed
	// (PUT ...?digest=) and refuses a mismatch.
	err := s.repo.Blobs().Push(g.ctx, ociDesc(d), g.reader(r))
	if err != nil {
		return s.wrap("push blob "+d.Digest, withCause(g.ctx, err))
	}
	return nil
}

func (s *ociStore) GetBlob(ctx context.Context, d Descriptor, offset int64) (io.ReadCloser, error) {
	if _, err := hexOf(d.Digest); err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if err := checkOffset(d, offset); err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if offset == d.Size && offset > 0 {
		// Nothing left to read; a Range past the end would be a 416.
		ok, err := s.HasBlob(ctx, d.Digest)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: blob %s: %w", s, d.Digest, ErrNotFound)
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	g := newStallGuard(ctx, s.timeout)
	var rc io.ReadCloser
	var skip int64
	var err error
	if offset == 0 {
		// oras checks Content-Length and the digest header.
		rc, err = s.repo.Blobs().Fetch(g.ctx, ociDesc(d))
	} else {
		rc, skip, err = s.fetchRange(g.ctx, offset, d)
	}
	if err != nil {
		g.stop()
		return nil, s.wrap("fetch blob "+d.Digest, withCause(g.ctx, err))
	}
	body := newGuardedBody(rc, g)
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			body.Close()
			return nil, s.wrap("fetch blob "+d.Digest, fmt.Errorf("skipping to offset %d: %w", skip, err))
		}
	}
	return body, nil
}

// fetchRange GETs a blob from offset in one request (oras's seekable
// Fetch would open the whole blob first, then ask again for the range). A
// server that ignores Range sends it all: skip says how much to discard.
func (s *ociStore) fetchRange(ctx context.Context, offset int64, d Descriptor) (rc io.ReadCloser, skip int64, err error) {
	scheme := "https"
	if s.repo.PlainHTTP {
		scheme = "http"
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, s.ref.Host(), s.ref.Repository, d.Digest)
	ctx = auth.AppendRepositoryScope(ctx, s.ref, auth.ActionPull)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	from := strconv.FormatInt(offset, 10)
	req.Header.Set("Range", "bytes="+from+"-")
	resp, err := s.repo.Client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes "+from+"-") {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("GET %s: asked for bytes from %d, got range %q", u, offset, cr)
		}
		return resp.Body, 0, nil
	case http.StatusOK:
		return resp.Body, offset, nil
	default:
		resp.Body.Close()
		return nil, 0, &errcode.ErrorResponse{Method: req.Method, URL: req.URL, StatusCode: resp.StatusCode}
	}
}

func (s *ociStore) PutManifest(ctx context.Context, tag string, mediaType string, b []byte) (Descriptor, error) {
	if mediaType == "" {
		mediaType = ManifestMediaType
	}
	if tag != "" {
		if err := checkTag(tag); err != nil {
			return Descriptor{}, fmt.Errorf("%s: %w", s, err)
		}
	}
	desc := content.NewDescriptorFromBytes(mediaType, b)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var err error
	if tag != "" {
		err = s.repo.PushReference(ctx, desc, bytes.NewReader(b), tag)
	} else {
		err = s.repo.Push(ctx, desc, bytes.NewReader(b))
	}
	var rerr *remote.ReferrersError
	if errors.As(err, &rerr) {
		// The manifest is in; only the client-side referrers index
		// (for `oras discover` on registries without the API) failed.
		// Our signatures are found by tag, so this is not fatal.
		slog.Warn("registry: referrers index not updated", "store", s.String(), "subject", rerr.Subject.Digest.String(), "err", rerr.Err)
		err = nil
	}
	if err != nil {
		return Descriptor{}, s.wrap("push manifest "+desc.Digest.String(), err)
	}
	return Descriptor{MediaType: mediaType, Digest: desc.Digest.String(), Size: desc.Size}, nil
}

func (s *ociStore) GetManifest(ctx context.Context, ref string) ([]byte, Descriptor, error) {
	var err error
	if strings.HasPrefix(ref, "sha256:") {
		_, err = hexOf(ref)
	} else {
		err = checkTag(ref)
	}
	if err != nil {
		return nil, Descriptor{}, fmt.Errorf("%s: %w", s, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	desc, rc, err := s.repo.Manifests().FetchReference(ctx, ref)
	if err != nil {
		return nil, Descriptor{}, s.wrap("manifest "+ref, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	if err != nil {
		return nil, Descriptor{}, s.wrap("manifest "+ref, err)
	}
	if len(b) > maxManifest {
		return nil, Descriptor{}, fmt.Errorf("%s: manifest %s is over %d bytes", s, ref, maxManifest)
	}
	sum := sha256.Sum256(b)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if desc.Digest != "" && desc.Digest.String() != got {
		return nil, Descriptor{}, fmt.Errorf("%s: manifest %s: registry says %s, content hashes to %s", s, ref, desc.Digest, got)
	}
	return b, Descriptor{MediaType: desc.MediaType, Digest: got, Size: int64(len(b))}, nil
}

func ociDesc(d Descriptor) ocispec.Descriptor {
	mt := d.MediaType
	if mt == "" {
		mt = "application/octet-stream"
	}
	return ocispec.Descriptor{MediaType: mt, Digest: digest.Digest(d.Digest), Size: d.Size}
}

// withCause puts a stalled transfer's cause in front of the bare
// "context canceled" the HTTP client reports.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// wrap maps a registry failure onto the package's errors, with the store
// and what was being done in the text and a hint at the fix.
func (s *ociStore) wrap(what string, err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUnavailable) {
		return err
	}
	status, codes := 0, []string(nil)
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		status = resp.StatusCode
		for _, e := range resp.Errors {
			codes = append(codes, e.Code)
		}
	}
	has := func(want ...string) bool {
		for _, c := range codes {
			for _, w := range want {
				if c == w {
					return true
				}
			}
		}
		return false
	}
	switch {
	case errors.Is(err, errdef.ErrNotFound), status == http.StatusNotFound,
		has(errcode.ErrorCodeManifestUnknown, errcode.ErrorCodeBlobUnknown, errcode.ErrorCodeNameUnknown):
		return fmt.Errorf("%s: %s: %w", s, what, ErrNotFound)
	case status == http.StatusUnauthorized, status == http.StatusForbidden,
		has(errcode.ErrorCodeUnauthorized, errcode.ErrorCodeDenied),
		errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%s: %s: %w: log in with `docker login %s`, or pass --username and --password-stdin: %w",
			s, what, ErrUnauthorized, s.ref.Registry, err)
	case isUnavailable(err), status == http.StatusBadGateway, status == http.StatusServiceUnavailable, status == http.StatusGatewayTimeout:
		return fmt.Errorf("%s: %s: %w: cannot reach %s: %w", s, what, ErrUnavailable, s.ref.Registry, err)
	}
	return fmt.Errorf("%s: %s%s: %w", s, what, tlsHint(err), err)
}

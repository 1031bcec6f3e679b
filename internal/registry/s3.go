package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

var (
	// singlePutMax is the largest blob sent as one PUT, which carries the
	// whole object's sha256 for the server to check. Larger ones go
	// multipart (S3 has no whole-object sha256 there), checked on our side
	// by verifyingReader before the upload is completed.
	singlePutMax int64 = 512 << 20
	// partSize is the multipart part size: minio buffers one part.
	partSize uint64 = 64 << 20
)

// s3Store is one prefix of an S3 bucket laid out like a registry:
// <prefix>/blobs/sha256/<hex>, <prefix>/manifests/<tag> and
// <prefix>/manifests/sha256/<hex>, manifests kept byte for byte so their
// digests match the OCI copies.
type s3Store struct {
	c        *minio.Client
	bucket   string
	prefix   string
	endpoint string
	timeout  time.Duration
}

func openS3(rest string, o Options) (*s3Store, error) {
	addr := "s3://" + rest
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return nil, fmt.Errorf("store address %q: bucket %q: %w (want s3://BUCKET[/PREFIX])", addr, bucket, err)
	}
	prefix = strings.Trim(prefix, "/")
	for seg := range strings.SplitSeq(prefix, "/") {
		if prefix != "" && (seg == "" || seg == "." || seg == "..") {
			return nil, fmt.Errorf("store address %q: prefix %q has an empty, '.' or '..' segment", addr, prefix)
		}
	}

	ep, custom := o.Endpoint, true
	for _, v := range []string{"MVM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if ep == "" {
			ep = os.Getenv(v)
		}
	}
	if ep == "" {
		ep, custom = "https://s3.amazonaws.com", false
	}
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("S3 endpoint %q: want http(s)://HOST[:PORT]", ep)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("S3 endpoint %s: plain HTTP is allowed only for a loopback endpoint (localhost, 127.0.0.1, ::1); use https://", ep)
	}
	if o.Password != "" && o.Username == "" {
		return nil, fmt.Errorf("S3 %s: a secret key needs an access key ID (username)", ep)
	}

	region := o.Region
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if region == "" {
			region = os.Getenv(v)
		}
	}
	if region == "" && custom {
		// Saves a GetBucketLocation round trip that S3-compatible
		// servers answer with this anyway.
		region = "us-east-1"
	}

	var creds *credentials.Credentials
	if o.Username != "" {
		creds = credentials.NewStaticV4(o.Username, o.Password, "")
	} else {
		// The AWS SDK's order: environment, shared credentials file
		// (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE), instance role.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}

	var rt http.RoundTripper
	if o.HTTPClient != nil {
		rt = o.HTTPClient.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
	} else {
		tr, err := transport(o)
		if err != nil {
			return nil, err
		}
		rt = tr
	}
	lookup := minio.BucketLookupAuto
	if custom {
		// Custom endpoints rarely have a wildcard name per bucket.
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       u.Scheme == "https",
		Transport:    rt,
		Region:       region,
		BucketLookup: lookup,
		// Lets a PUT carry x-amz-checksum-sha256 (minio insists).
		TrailingHeaders: true,
		// minio's default of 10 turns a stopped server into a long
		// wait; three still rides out a hiccup.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 %s: %w", ep, err)
	}
	c.SetAppInfo("mvm", "1")
	return &s3Store{c: c, bucket: bucket, prefix: prefix, endpoint: u.Host, timeout: o.timeout()}, nil
}

func (s *s3Store) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + s.prefix
}

func (s *s3Store) key(parts ...string) string {
	return path.Join(append([]string{s.prefix}, parts...)...)
}

func (s *s3Store) blobKey(dgst string) (string, error) {
	h, err := hexOf(dgst)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s, err)
	}
	return s.key("blobs", "sha256", h), nil
}

func (s *s3Store) HasBlob(ctx context.Context, dgst string) (bool, error) {
	key, err := s.blobKey(dgst)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// A one-byte GET, not a HEAD: a HEAD's error has no body, and some
	// servers (versitygw) answer a HEAD with an unknown access key 404,
	// which would read as "absent" instead of "credentials refused".
	var opts minio.GetObjectOptions
	if err := opts.SetRange(0, 0); err != nil {
		return false, err
	}
	rc, _, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		code := minio.ToErrorResponse(err).Code
		if code == "InvalidRange" {
			return true, nil // an empty blob has no byte 0
		}
		err = s.wrap("blob "+dgst, err)
		if errors.Is(err, ErrNotFound) && code != minio.NoSuchBucket {
			return false, nil
		}
		return false, err
	}
	rc.Close()
	return true, nil
}

func (s *s3Store) PutBlob(ctx context.Context, d Descriptor, r io.Reader) error {
	key, err := s.blobKey(d.Digest)
	if err != nil {
		return err
	}
	g := newStallGuard(ctx, s.timeout)
	defer g.stop()
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if d.Size <= singlePutMax {
		opts.DisableMultipart = true
		opts.UserMetadata = map[string]string{"x-amz-checksum-sha256": checksumSHA256(d.Digest)}
	} else {
		opts.PartSize = partSize
	}
	vr := &verifyingReader{r: g.reader(r), d: d, h: sha256.New()}
	if _, err := s.c.PutObject(g.ctx, s.bucket, key, vr, d.Size, opts); err != nil {
		return s.wrap("put blob "+d.Digest, withCause(g.ctx, err))
	}
	return nil
}

// checksumSHA256 is a digest as S3's x-amz-checksum-sha256 spells it.
func checksumSHA256(dgst string) string {
	raw, _ := hex.DecodeString(strings.TrimPrefix(dgst, "sha256:"))
	return base64.StdEncoding.EncodeToString(raw)
}

func (s *s3Store) GetBlob(ctx context.Context, d Descriptor, offset int64) (io.ReadCloser, error) {
	key, err := s.blobKey(d.Digest)
	if err != nil {
		return nil, err
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
	var opts minio.GetObjectOptions
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			g.stop()
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	// Core's GetObject sends the request now, so a missing blob is an
	// error here rather than on the first Read.
	rc, info, _, err := minio.Core{Client: s.c}.GetObject(g.ctx, s.bucket, key, opts)
	if err != nil {
		g.stop()
		return nil, s.wrap("get blob "+d.Digest, withCause(g.ctx, err))
	}
	if want := d.Size - offset; info.Size != want {
		rc.Close()
		g.stop()
		return nil, fmt.Errorf("%s: blob %s: %d bytes from offset %d, want %d", s, d.Digest, info.Size, offset, want)
	}
	return newGuardedBody(rc, g), nil
}

func (s *s3Store) PutManifest(ctx context.Context, tag string, mediaType string, b []byte) (Descriptor, error) {
	if mediaType == "" {
		mediaType = ManifestMediaType
	}
	if tag != "" {
		if err := s.checkTag(tag); err != nil {
			return Descriptor{}, err
		}
	}
	sum := sha256.Sum256(b)
	d := Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	opts := minio.PutObjectOptions{
		ContentType:      mediaType,
		DisableMultipart: true,
		UserMetadata:     map[string]string{"x-amz-checksum-sha256": checksumSHA256(d.Digest)},
	}
	// By digest first, so a tag never names a manifest that is not
	// also reachable by its digest.
	keys := []string{s.key("manifests", "sha256", hex.EncodeToString(sum[:]))}
	if tag != "" {
		keys = append(keys, s.key("manifests", tag))
	}
	for _, k := range keys {
		if _, err := s.c.PutObject(ctx, s.bucket, k, bytes.NewReader(b), int64(len(b)), opts); err != nil {
			return Descriptor{}, s.wrap("put manifest "+d.Digest, err)
		}
	}
	return d, nil
}

// checkTag adds to the OCI grammar that "sha256" would be both a tag's
// object and the digests' folder, which a file-backed server cannot hold.
func (s *s3Store) checkTag(tag string) error {
	if err := checkTag(tag); err != nil {
		return fmt.Errorf("%s: %w", s, err)
	}
	if tag == "sha256" {
		return fmt.Errorf("%s: tag %q is reserved in a bucket (manifests by digest live under it)", s, tag)
	}
	return nil
}

func (s *s3Store) GetManifest(ctx context.Context, ref string) ([]byte, Descriptor, error) {
	var key string
	byDigest := strings.HasPrefix(ref, "sha256:")
	if byDigest {
		h, err := hexOf(ref)
		if err != nil {
			return nil, Descriptor{}, fmt.Errorf("%s: %w", s, err)
		}
		key = s.key("manifests", "sha256", h)
	} else {
		if err := s.checkTag(ref); err != nil {
			return nil, Descriptor{}, err
		}
		key = s.key("manifests", ref)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rc, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
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
	d := Descriptor{MediaType: info.ContentType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
	if byDigest && d.Digest != ref {
		return nil, Descriptor{}, fmt.Errorf("%s: manifest %s: stored content hashes to %s", s, ref, d.Digest)
	}
	if d.MediaType == "" || d.MediaType == "application/octet-stream" || d.MediaType == "binary/octet-stream" {
		// A copy made by a tool that dropped Content-Type: the
		// manifest names its own type.
		var m struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(b, &m) == nil && m.MediaType != "" {
			d.MediaType = m.MediaType
		}
	}
	return b, d, nil
}

// authCodes are the S3 error codes that mean the credentials are wrong,
// missing or not allowed.
var authCodes = map[string]bool{
	minio.AccessDenied: true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true,
	"InvalidSecurity": true, "XAdminUserNotFound": true,
}

// wrap maps an S3 failure onto the package's errors, with the store, what
// was being done and a hint at the fix in the text.
func (s *s3Store) wrap(what string, err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUnavailable) {
		return err
	}
	resp := minio.ToErrorResponse(err)
	switch {
	// Codes before statuses: versitygw answers an unknown access key
	// with 404 XAdminUserNotFound, which is no missing object.
	case authCodes[resp.Code], resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s: %s: %w: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile in ~/.aws/credentials), or pass --username (access key ID) and --password-stdin (secret): %w",
			s, what, ErrUnauthorized, err)
	case resp.Code == minio.NoSuchBucket:
		return fmt.Errorf("%s: %s: %w: bucket %q does not exist at %s", s, what, ErrNotFound, s.bucket, s.endpoint)
	case resp.Code == minio.NoSuchKey, resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %s: %w", s, what, ErrNotFound)
	case isUnavailable(err), resp.StatusCode == http.StatusBadGateway, resp.StatusCode == http.StatusServiceUnavailable,
		resp.StatusCode == http.StatusGatewayTimeout:
		return fmt.Errorf("%s: %s: %w: cannot reach %s: %w", s, what, ErrUnavailable, s.endpoint, err)
	}
	return fmt.Errorf("%s: %s%s: %w", s, what, tlsHint(err), err)
}

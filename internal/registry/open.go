package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds each metadata request, each connection set-up and
// each stall of a blob transfer when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Options configure how a Store reaches its server. The zero value is the
// safe default: TLS verified against the system roots, credentials from the
// user's usual configuration (~/.docker/config.json and its helpers for a
// registry; the AWS environment and ~/.aws/credentials for S3).
type Options struct {
	// Username and Password override the stored credentials: a registry
	// login, or for S3 the access key ID and the secret access key.
	Username string
	Password string
	// Insecure talks plain HTTP to an OCI registry. Refused unless the
	// host is loopback, so a typo cannot send credentials or templates in
	// clear over a network. (S3 takes plain HTTP from an http:// Endpoint,
	// under the same rule.) There is no "skip TLS verification": trust a
	// self-signed server with CAFile instead.
	Insecure bool
	// CAFile is a PEM bundle trusted in addition to the system roots (a
	// private registry's CA, or the tests' own).
	CAFile string
	// Timeout bounds each request's connection set-up and response
	// headers, each metadata request as a whole, and how long a blob
	// transfer may go without moving a byte. Zero means DefaultTimeout.
	Timeout time.Duration
	// HTTPClient replaces the client built from CAFile and Timeout (S3
	// uses only its Transport); the per-request deadlines still apply.
	HTTPClient *http.Client

	// Endpoint is the S3 endpoint URL ("https://minio.lan:9000"). Empty
	// means MVM_S3_ENDPOINT, then AWS_ENDPOINT_URL_S3, then
	// AWS_ENDPOINT_URL, then AWS itself. A custom endpoint is addressed
	// path-style; plain http:// is allowed only on loopback.
	Endpoint string
	// Region is the S3 region; empty means AWS_REGION, then
	// AWS_DEFAULT_REGION, then "us-east-1" for a custom endpoint (AWS
	// itself is asked).
	Region string
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

// Open returns the Store at addr: "s3://bucket/prefix" is an S3 bucket,
// anything else an OCI repository "host[:port]/name".
func Open(addr string, o Options) (Store, error) {
	// Each branch returns its own nil on error: a typed nil pointer in
	// the interface would not compare equal to nil.
	if rest, ok := strings.CutPrefix(addr, "s3://"); ok {
		s, err := openS3(rest, o)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	if strings.Contains(addr, "://") {
		return nil, fmt.Errorf("store address %q: only s3:// URLs take a scheme; write a registry as HOST[:PORT]/NAME", addr)
	}
	s, err := openOCI(addr, o)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// isLoopback reports whether host (no port) is this machine, by name or
// address; names other than localhost are not resolved, since what a
// name resolves to can change between the check and the connection.
func isLoopback(host string) bool {
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// splitHost returns the host of "host[:port]", IPv6 brackets removed.
func splitHost(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// hexOf checks a "sha256:<hex>" digest and returns its hex, which also
// keeps object keys and URLs built from it free of anything but hex.
func hexOf(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("digest %q: want sha256:<64 lowercase hex digits>", digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("digest %q: want sha256:<64 lowercase hex digits>", digest)
	}
	return h, nil
}

// tagRE is the OCI distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

func checkTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("tag %q: want letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')", tag)
	}
	return nil
}

func checkOffset(d Descriptor, offset int64) error {
	if offset < 0 || offset > d.Size {
		return fmt.Errorf("blob %s: offset %d outside its %d bytes", d.Digest, offset, d.Size)
	}
	return nil
}

// transport is what both stores use unless Options.HTTPClient is set:
// system roots plus CAFile, TLS 1.2 or newer, and timeouts on every phase
// before the body (the body itself is guarded by stallGuard, so a large
// blob may take as long as it needs while it keeps moving).
func transport(o Options) (*http.Transport, error) {
	// Without a CA file the roots stay nil: crypto/tls then loads the
	// system's on the first handshake, so a plain-HTTP loopback registry
	// never pays the ~15 ms of parsing them.
	var roots *x509.CertPool
	if o.CAFile != "" {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", o.CAFile)
		}
	}
	t := o.timeout()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: t, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.TLSHandshakeTimeout = t
	tr.ResponseHeaderTimeout = t
	tr.ExpectContinueTimeout = time.Second
	return tr, nil
}

// errStalled is the cause a transfer's context is cancelled with when its
// bytes stop moving.
var errStalled = errors.New("transfer stalled")

// stallGuard is the deadline of a blob transfer: rather than a fixed limit,
// which a large blob on a slow link would hit while healthy, it cancels the
// transfer when no byte has moved for the timeout. It watches the network
// through the reads the transfer makes; a caller's own reader that blocks
// forever is the caller's to bound (net/http waits for a body read).
type stallGuard struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	d      time.Duration
	timer  *time.Timer
	once   sync.Once
}

func newStallGuard(ctx context.Context, d time.Duration) *stallGuard {
	g := &stallGuard{d: d}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	g.timer = time.AfterFunc(d, func() { g.cancel(fmt.Errorf("%w: no data for %s", errStalled, d)) })
	return g
}

func (g *stallGuard) touch() { g.timer.Reset(g.d) }

func (g *stallGuard) stop() {
	g.once.Do(func() {
		g.timer.Stop()
		g.cancel(context.Canceled)
	})
}

// reader returns r with every read counting as progress.
func (g *stallGuard) reader(r io.Reader) io.Reader { return &guardedReader{r: r, g: g} }

type guardedReader struct {
	r io.Reader
	g *stallGuard
}

func (gr *guardedReader) Read(p []byte) (int, error) {
	n, err := gr.r.Read(p)
	if n > 0 {
		gr.g.touch()
	}
	return n, err
}

// guardedBody is a download's body: reads are progress, Close ends the
// guard (and the request's context with it).
type guardedBody struct {
	io.Reader
	body io.Closer
	g    *stallGuard
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.g.ctx); errors.Is(cause, errStalled) {
			err = fmt.Errorf("%w: %w: %w", ErrUnavailable, cause, err)
		}
	}
	return n, err
}

func (b *guardedBody) Close() error {
	err := b.body.Close()
	b.g.stop()
	return err
}

func newGuardedBody(body io.ReadCloser, g *stallGuard) io.ReadCloser {
	return &guardedBody{Reader: g.reader(body), body: body, g: g}
}

// verifyingReader passes through exactly the descriptor's bytes and fails
// the read that would complete a blob whose digest or size is wrong, so an
// upload that streams from it is aborted before the server commits it (the
// S3 multipart path has no server-side whole-object sha256 to do that).
type verifyingReader struct {
	r    io.Reader
	d    Descriptor
	h    hashWriter
	n    int64
	done bool
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	if rest := v.d.Size - v.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF && v.n < v.d.Size {
		return n, fmt.Errorf("blob %s: content ended after %d of %d bytes", v.d.Digest, v.n, v.d.Size)
	}
	if err != nil && err != io.EOF {
		return n, err
	}
	if v.n < v.d.Size {
		return n, nil
	}
	// The last byte is in hand: the data must end here and hash right,
	// else this read fails without it so the upload cannot complete.
	var one [1]byte
	if m, _ := io.ReadFull(v.r, one[:]); m > 0 {
		return 0, fmt.Errorf("blob %s: content is longer than its %d bytes", v.d.Digest, v.d.Size)
	}
	if got := "sha256:" + hex.EncodeToString(v.h.Sum(nil)); got != v.d.Digest {
		return 0, fmt.Errorf("blob %s: content hashes to %s", v.d.Digest, got)
	}
	v.done = true
	return n, io.EOF
}

// isUnavailable reports whether err says the server could not be reached
// or stopped answering (as opposed to answering no).
func isUnavailable(err error) bool {
	if errors.Is(err, errStalled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT, syscall.EPIPE} {
		if errors.Is(err, e) {
			return true
		}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// tlsHint names the fix for a certificate nobody here trusts.
func tlsHint(err error) string {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return " (its certificate is signed by an unknown authority: trust that CA with a CA file)"
	case errors.As(err, &hn):
		return " (its certificate is for another name)"
	}
	return ""
}

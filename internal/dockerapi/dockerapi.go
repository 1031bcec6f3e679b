// Package dockerapi is the small Docker Engine API transport mvm uses: HTTP
// over the daemon's unix socket, pinned to one API version. Hand-written
// rather than the moby client module, which is heavy for the dozen calls the
// Docker backend and the OCI image source make, and rather than forking the
// docker CLI, which costs 50–100 ms per call (see internal/backend/docker).
package dockerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// APIVersion is the Engine API version spoken: Docker 19.03 and newer.
const APIVersion = "v1.40"

// DefaultSocket is where the daemon listens unless DOCKER_HOST says otherwise.
const DefaultSocket = "/var/run/docker.sock"

// SocketPath resolves the daemon socket from a DOCKER_HOST value. Only unix
// sockets are supported: a remote daemon could not see our files.
func SocketPath(dockerHost string) (string, error) {
	switch {
	case dockerHost == "":
		return DefaultSocket, nil
	case strings.HasPrefix(dockerHost, "unix://"):
		p := strings.TrimPrefix(dockerHost, "unix://")
		if p == "" || p[0] != '/' {
			return "", fmt.Errorf("DOCKER_HOST=%s: want unix:///absolute/path", dockerHost)
		}
		return p, nil
	default:
		return "", fmt.Errorf("DOCKER_HOST=%s: only a local unix socket is supported (the daemon must see mvm's files)", dockerHost)
	}
}

// Client talks to one daemon. It holds no connection between calls beyond
// http.Transport's small idle pool.
type Client struct {
	Sock string
	hc   *http.Client
}

// New returns a client for the daemon named by $DOCKER_HOST.
func New() (*Client, error) {
	sock, err := SocketPath(os.Getenv("DOCKER_HOST"))
	if err != nil {
		return nil, err
	}
	return NewAt(sock), nil
}

// NewAt returns a client for the daemon listening on sock.
func NewAt(sock string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns: 2,
	}
	// No client-wide timeout: an image import or save may take a while;
	// every call carries the caller's context instead.
	return &Client{Sock: sock, hc: &http.Client{Transport: tr}}
}

// Error is an error answer from the daemon.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("docker engine: %s (HTTP %d)", e.Message, e.Status)
}

// IsStatus reports whether err is a daemon answer with the given status.
func IsStatus(err error, status int) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Status == status
}

// Call sends one request and returns the open response when the status is
// below 400; higher statuses become *Error. body and ctype may be empty.
func (c *Client) Call(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := "http://docker/" + APIVersion + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: %w", c.Sock, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// Do sends one request; a non-nil out is decoded from the JSON answer.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string, out any) error {
	resp, err := c.Call(ctx, method, path, q, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("docker engine %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// DoJSON is Do with in sent as a JSON body.
func (c *Client) DoJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.Do(ctx, method, path, q, bytes.NewReader(b), "application/json", out)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

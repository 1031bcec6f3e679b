// Package api is a small client for Firecracker's HTTP API over its unix
// socket (API v1.16). It covers exactly the endpoints the backend uses,
// with typed bodies, a deadline on every call, and errors that carry
// Firecracker's fault_message.
//
// Hand-written rather than firecracker-go-sdk: the SDK is generated from
// API 1.4.1 and lags the releases we support (no /serial, no
// network_overrides or vsock_override on load, removed fields still sent),
// and it pulls in a large dependency tree for a dozen PUTs.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultTimeout bounds a call whose context has no deadline. Firecracker
// answers each request only after the action is done, and the slowest
// (snapshot create/load of a large VM) take seconds, not minutes.
const DefaultTimeout = 30 * time.Second

// maxResponse bounds what we read of a response: Firecracker's bodies are a
// few hundred bytes (GET /vm/config a few KiB).
const maxResponse = 1 << 20

// Client talks to one Firecracker process.
type Client struct {
	sock string
	http *http.Client
}

// New returns a client for the API socket at sock.
func New(sock string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		// Firecracker serves one request at a time; a fresh connection per
		// call keeps a dead process from leaving us a stale idle one.
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: DefaultTimeout,
	}
	return &Client{sock: sock, http: &http.Client{Transport: tr}}
}

// Socket returns the API socket path.
func (c *Client) Socket() string { return c.sock }

// Error is a refused request: the HTTP status and Firecracker's
// fault_message.
type Error struct {
	Method, Path string
	Status       int
	Fault        string
}

func (e *Error) Error() string {
	msg := e.Fault
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, msg)
}

// IsFault reports whether err is a request Firecracker refused.
func IsFault(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// do sends one request; in (may be nil) is the JSON body, out (may be nil)
// receives a 200 body.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s (socket %s): %w", method, path, c.sock, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: read response: %w", method, path, err)
	}
	if len(b) > maxResponse {
		return fmt.Errorf("firecracker %s %s: response larger than %d bytes", method, path, maxResponse)
	}
	return decodeResponse(method, path, resp.StatusCode, b, out)
}

// decodeResponse turns a status and body into nil, an *Error, or out's
// value. Separate from do so it can be fuzzed.
func decodeResponse(method, path string, status int, body []byte, out any) error {
	switch {
	case status == http.StatusNoContent:
		return nil
	case status >= 200 && status < 300:
		if out == nil || len(bytes.TrimSpace(body)) == 0 {
			if out != nil {
				return fmt.Errorf("firecracker %s %s: empty response body", method, path)
			}
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("firecracker %s %s: decode response: %w", method, path, err)
		}
		return nil
	}
	e := &Error{Method: method, Path: path, Status: status}
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	if json.Unmarshal(body, &f) == nil && f.FaultMessage != "" {
		e.Fault = printable(f.FaultMessage, 2000) // shown to users: no terminal escapes
	} else if s := strings.TrimSpace(string(body)); s != "" {
		// Not Firecracker's shape (a proxy, a crashed process): keep a
		// bounded, printable excerpt.
		e.Fault = printable(s, 200)
	}
	return e
}

func printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// WaitReady polls until the API answers GET / (a socket that exists may not
// listen yet), ctx ends, or exited (may be nil) is closed because the
// process died.
func (c *Client) WaitReady(ctx context.Context, exited <-chan struct{}) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Instance(actx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker API at %s not ready: %w (last: %v)", c.sock, ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("firecracker exited before its API at %s was ready", c.sock)
		case <-tick.C:
		}
	}
}

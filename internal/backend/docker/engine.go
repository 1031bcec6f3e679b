package docker

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

// apiVersion is the Engine API version we speak: Docker 19.03 and newer.
// Everything used here (NanoCpus, AutoRemove, import changes) is older.
const apiVersion = "v1.40"

// DefaultSocket is where the daemon listens unless DOCKER_HOST says otherwise.
const DefaultSocket = "/var/run/docker.sock"

// engine is a small Engine API client: HTTP/1.1 over the daemon's unix
// socket. It holds no connection between calls beyond http.Transport's pool.
type engine struct {
	sock string
	hc   *http.Client
}

// socketPath resolves the daemon socket from DOCKER_HOST. Only unix sockets
// are supported: a TCP daemon could not bind-mount our VM directory anyway.
func socketPath(dockerHost string) (string, error) {
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
		return "", fmt.Errorf("DOCKER_HOST=%s: only a local unix socket is supported (the daemon must see the VM directory to bind-mount it)", dockerHost)
	}
}

func newEngine() (*engine, error) {
	sock, err := socketPath(os.Getenv("DOCKER_HOST"))
	if err != nil {
		return nil, err
	}
	return newEngineAt(sock), nil
}

func newEngineAt(sock string) *engine {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns:      2,
		DisableKeepAlives: false,
	}
	// No client-wide timeout: an image import may take a while; every call
	// carries the caller's context instead.
	return &engine{sock: sock, hc: &http.Client{Transport: tr}}
}

// apiError is an error answer from the daemon.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("docker engine: %s (HTTP %d)", e.Message, e.Status)
}

// isStatus reports whether err is a daemon answer with the given status.
func isStatus(err error, status int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == status
}

// do sends one request. body may be nil; a non-nil out is decoded from a JSON
// answer. Status codes >= 400 become *apiError.
func (e *engine) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string, out any) error {
	u := "http://docker/" + apiVersion + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("docker engine at %s: %w", e.sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeAPIError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("docker engine %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func decodeAPIError(resp *http.Response) error {
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
	return &apiError{Status: resp.StatusCode, Message: msg}
}

func (e *engine) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return e.do(ctx, method, path, q, bytes.NewReader(b), "application/json", out)
}

// ping checks that the daemon answers.
func (e *engine) ping(ctx context.Context) error {
	return e.do(ctx, http.MethodGet, "/_ping", nil, nil, "", nil)
}

// imageExists reports whether a local image with this reference exists.
func (e *engine) imageExists(ctx context.Context, ref string) (bool, error) {
	err := e.do(ctx, http.MethodGet, "/images/"+url.PathEscape(ref)+"/json", nil, nil, "", nil)
	if isStatus(err, http.StatusNotFound) {
		return false, nil
	}
	return err == nil, err
}

// importImage is `docker import - repo:tag --change ...`: the daemon reads a
// root filesystem tar from r. Progress and errors arrive as a JSON stream
// with status 200, so the stream is read to its end for an error message.
func (e *engine) importImage(ctx context.Context, repo, tag string, changes []string, r io.Reader) error {
	q := url.Values{"fromSrc": {"-"}, "repo": {repo}, "tag": {tag}}
	for _, c := range changes {
		q.Add("changes", c)
	}
	u := "http://docker/" + apiVersion + "/images/create?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("docker import: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("docker import: %w", decodeAPIError(resp))
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 16<<20))
	for {
		var m struct {
			Error  string `json:"error"`
			Status string `json:"status"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("docker import: read progress: %w", err)
		}
		if m.Error != "" {
			return fmt.Errorf("docker import: %s", m.Error)
		}
	}
}

// containerState is the part of /containers/{id}/json that we read.
type containerState struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	State struct {
		Status    string `json:"Status"` // created running paused restarting removing exited dead
		Running   bool   `json:"Running"`
		Paused    bool   `json:"Paused"`
		OOMKilled bool   `json:"OOMKilled"`
		Dead      bool   `json:"Dead"`
		Pid       int    `json:"Pid"`
		ExitCode  int    `json:"ExitCode"`
		Error     string `json:"Error"`
	} `json:"State"`
}

func (e *engine) inspect(ctx context.Context, name string) (*containerState, error) {
	var cs containerState
	if err := e.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(name)+"/json", nil, nil, "", &cs); err != nil {
		return nil, err
	}
	return &cs, nil
}

func (e *engine) create(ctx context.Context, name string, body createBody) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	if err := e.doJSON(ctx, http.MethodPost, "/containers/create", url.Values{"name": {name}}, body, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// post sends a body-less POST to /containers/{name}/{verb}.
func (e *engine) post(ctx context.Context, name, verb string, q url.Values) error {
	return e.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(name)+"/"+verb, q, nil, "", nil)
}

// remove force-removes a container (killing it if it runs).
func (e *engine) remove(ctx context.Context, name string) error {
	q := url.Values{"force": {"1"}, "v": {"1"}}
	return e.do(ctx, http.MethodDelete, "/containers/"+url.PathEscape(name), q, nil, "", nil)
}

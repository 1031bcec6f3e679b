package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/mvm-dev/mvm/internal/dockerapi"
)

// DefaultSocket is where the daemon listens unless DOCKER_HOST says otherwise.
const DefaultSocket = dockerapi.DefaultSocket

// engine is the backend's view of the Engine API (internal/dockerapi): the
// container and image calls the backend makes.
type engine struct {
	*dockerapi.Client
	sock string
}

// socketPath resolves the daemon socket from DOCKER_HOST.
func socketPath(dockerHost string) (string, error) { return dockerapi.SocketPath(dockerHost) }

func newEngine() (*engine, error) {
	c, err := dockerapi.New()
	if err != nil {
		return nil, err
	}
	return &engine{Client: c, sock: c.Sock}, nil
}

func newEngineAt(sock string) *engine { return &engine{Client: dockerapi.NewAt(sock), sock: sock} }

// isStatus reports whether err is a daemon answer with the given status.
func isStatus(err error, status int) bool { return dockerapi.IsStatus(err, status) }

func (e *engine) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string, out any) error {
	return e.Do(ctx, method, path, q, body, ctype, out)
}

func (e *engine) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	return e.DoJSON(ctx, method, path, q, in, out)
}

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
	resp, err := e.Call(ctx, http.MethodPost, "/images/create", q, r, "application/x-tar")
	if err != nil {
		return fmt.Errorf("docker import: %w", err)
	}
	defer resp.Body.Close()
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

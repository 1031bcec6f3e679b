package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

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
	NetworkSettings struct {
		// Networks maps Docker network name to the container's endpoint.
		Networks map[string]struct {
			NetworkID  string `json:"NetworkID"`
			IPAddress  string `json:"IPAddress"`
			MacAddress string `json:"MacAddress"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
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

// execWait runs argv in a running container through the exec API, detached
// from us (no streams), and waits for its exit code. privileged gives that
// one process every capability, never the container's own.
func (e *engine) execWait(ctx context.Context, container string, argv []string, privileged bool) (int, error) {
	body := struct {
		Cmd          []string `json:"Cmd"`
		Privileged   bool     `json:"Privileged"`
		AttachStdout bool     `json:"AttachStdout"`
		AttachStderr bool     `json:"AttachStderr"`
	}{Cmd: argv, Privileged: privileged}
	var created struct {
		ID string `json:"Id"`
	}
	if err := e.doJSON(ctx, http.MethodPost, "/containers/"+url.PathEscape(container)+"/exec", nil, body, &created); err != nil {
		return 0, fmt.Errorf("exec create in %s: %w", container, err)
	}
	start := struct {
		Detach bool `json:"Detach"`
		Tty    bool `json:"Tty"`
	}{Detach: true}
	if err := e.doJSON(ctx, http.MethodPost, "/exec/"+created.ID+"/start", nil, start, nil); err != nil {
		return 0, fmt.Errorf("exec start in %s: %w", container, err)
	}
	for {
		var st struct {
			Running  bool `json:"Running"`
			ExitCode int  `json:"ExitCode"`
			Pid      int  `json:"Pid"`
		}
		if err := e.do(ctx, http.MethodGet, "/exec/"+created.ID+"/json", nil, nil, "", &st); err != nil {
			return 0, fmt.Errorf("exec inspect in %s: %w", container, err)
		}
		// Not running with neither a pid nor an exit code: not started yet.
		if !st.Running && (st.Pid != 0 || st.ExitCode != 0) {
			return st.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("exec in %s: %w", container, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

package image

import (
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
	"time"
)

// dockerAPIVersion is the Engine API version spoken here (Docker 19.03+),
// as in internal/backend/docker.
const dockerAPIVersion = "v1.40"

// dockerDefaultSocket is the daemon socket unless DOCKER_HOST names another.
const dockerDefaultSocket = "/var/run/docker.sock"

// dockerInspectTimeout bounds the small JSON calls; saves carry the
// caller's context only (a large image takes a while).
const dockerInspectTimeout = 30 * time.Second

// dockerClient reads images from the local Docker daemon over its unix
// socket (Engine API). Only what the OCI rootfs source needs.
type dockerClient struct {
	sock string
	hc   *http.Client
}

func newDockerClient() (*dockerClient, error) {
	sock := dockerDefaultSocket
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		if !strings.HasPrefix(h, "unix:///") {
			return nil, fmt.Errorf("DOCKER_HOST=%s: only unix:///PATH is supported for docker-daemon: images", h)
		}
		sock = strings.TrimPrefix(h, "unix://")
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns: 1,
	}
	return &dockerClient{sock: sock, hc: &http.Client{Transport: tr}}, nil
}

// call sends one request and returns the open response for status < 400.
func (c *dockerClient) call(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/"+dockerAPIVersion+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker daemon at %s: %w (is Docker running?)", c.sock, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var m struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &m) == nil && m.Message != "" {
			msg = m.Message
		}
		return nil, &dockerError{Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

// dockerError is an error answer from the daemon.
type dockerError struct {
	Status  int
	Message string
}

func (e *dockerError) Error() string {
	return fmt.Sprintf("docker daemon: %s (HTTP %d)", e.Message, e.Status)
}

// imageID returns the image's ID ("sha256:<config digest>"), which names
// its configuration and through it every layer's content.
func (c *dockerClient) imageID(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerInspectTimeout)
	defer cancel()
	resp, err := c.call(ctx, http.MethodGet, "/images/"+escapeImageName(ref)+"/json", nil)
	if err != nil {
		var de *dockerError
		if errors.As(err, &de) && de.Status == http.StatusNotFound {
			return "", fmt.Errorf("docker image %s not found in the local daemon (docker pull or docker build it first)", ref)
		}
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		ID string `json:"Id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("docker image %s: decode inspect answer: %w", ref, err)
	}
	if !sha256DigestRE.MatchString(out.ID) {
		return "", fmt.Errorf("docker image %s: unexpected image ID %q", ref, out.ID)
	}
	return out.ID, nil
}

// save writes `docker save` of the image to w.
func (c *dockerClient) save(ctx context.Context, ref string, w io.Writer) error {
	resp, err := c.call(ctx, http.MethodGet, "/images/"+escapeImageName(ref)+"/get", nil)
	if err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	return nil
}

// escapeImageName escapes each path segment of an image name; slashes stay,
// as the daemon routes /images/{name:.*}/json.
func escapeImageName(ref string) string {
	parts := strings.Split(ref, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

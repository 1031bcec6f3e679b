package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/dockerapi"
)

// dockerInspectTimeout bounds the small JSON calls; saves carry the
// caller's context only (a large image takes a while).
const dockerInspectTimeout = 30 * time.Second

// dockerClient reads images from the local Docker daemon through the shared
// Engine API transport. Only what the OCI rootfs source needs.
type dockerClient struct {
	api *dockerapi.Client
}

func newDockerClient() (*dockerClient, error) {
	api, err := dockerapi.New()
	if err != nil {
		return nil, fmt.Errorf("docker-daemon: images: %w", err)
	}
	return &dockerClient{api: api}, nil
}

// call sends one request and returns the open response for status < 400.
func (c *dockerClient) call(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	resp, err := c.api.Call(ctx, method, path, nil, body, "")
	var ae *dockerapi.Error
	if err != nil && !errors.As(err, &ae) {
		return nil, fmt.Errorf("%w (is Docker running?)", err)
	}
	return resp, err
}

// imageID returns the image's ID ("sha256:<config digest>"), which names
// its configuration and through it every layer's content.
func (c *dockerClient) imageID(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerInspectTimeout)
	defer cancel()
	resp, err := c.call(ctx, http.MethodGet, "/images/"+escapeImageName(ref)+"/json", nil)
	if err != nil {
		if dockerapi.IsStatus(err, http.StatusNotFound) {
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

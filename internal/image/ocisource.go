package image

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	gcrtarball "github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ociSource is a resolved rootfs.image: what it is, the digest that
// identifies its content, and how to read it.
type ociSource struct {
	ref ociRef
	// digest is the image manifest's digest (registry, OCI layout and
	// archive) or, for Docker sources, the image ID (the config's digest,
	// which lists every layer's content digest).
	digest string
	img    v1.Image      // nil for docker-daemon until fetched
	docker *dockerClient // docker-daemon only
	store  blobStore     // layout/archive; closed by close
}

func (o *ociSource) close() {
	if o.store != nil {
		o.store.Close()
	}
}

// registryTransport bounds connection set-up and waiting for headers; body
// reads are bounded by the caller's context.
func registryTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
}

// resolveOCI finds the image a recipe names and its content digest. Local
// paths are relative to the recipe. Only a docker-daemon image is not read
// yet (exporting it costs as much as the build).
func resolveOCI(ctx context.Context, r *Recipe, arch string) (*ociSource, error) {
	ref, err := parseOCIRef(r.Rootfs.Image)
	if err != nil {
		return nil, err
	}
	o := &ociSource{ref: ref}
	if ref.isLocal() {
		p, err := filepath.Abs(r.srcPath(ref.Path))
		if err != nil {
			return nil, err
		}
		ref.Path = p
		o.ref = ref
	}
	switch ref.Kind {
	case OCIRegistry:
		nr, err := name.ParseReference(ref.Name)
		if err != nil {
			return nil, err
		}
		img, err := remote.Image(nr, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}), remote.WithTransport(registryTransport()))
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref.Name, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref.Name, err)
		}
		o.img, o.digest = img, d.String()
	case OCILayout, OCIArchive:
		if ref.Kind == OCILayout {
			o.store = dirStore{root: ref.Path}
		} else {
			a, err := openArchiveStore(ref.Path)
			if err != nil {
				return nil, fmt.Errorf("oci-archive: %w", err)
			}
			o.store = a
		}
		img, d, err := selectLayoutImage(o.store, ref, arch)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("%s:%s: %w", ref.Kind, ref.Path, err)
		}
		o.img, o.digest = img, d.String()
	case OCIDockerArchive:
		img, err := gcrtarball.ImageFromPath(ref.Path, nil)
		if err != nil {
			return nil, fmt.Errorf("docker-archive:%s: %w", ref.Path, err)
		}
		cn, err := img.ConfigName()
		if err != nil {
			return nil, fmt.Errorf("docker-archive:%s: %w", ref.Path, err)
		}
		o.img, o.digest = img, cn.String()
	case OCIDockerDaemon:
		c, err := newDockerClient()
		if err != nil {
			return nil, err
		}
		id, err := c.imageID(ctx, ref.Name)
		if err != nil {
			return nil, err
		}
		o.docker, o.digest = c, id
	default:
		return nil, fmt.Errorf("image reference kind %q not supported", ref.Kind)
	}
	if !sha256DigestRE.MatchString(o.digest) {
		o.close()
		return nil, fmt.Errorf("image %s: unsupported digest %q", r.Rootfs.Image, o.digest)
	}
	return o, nil
}

// image returns the v1.Image, exporting a docker-daemon image into workDir.
func (o *ociSource) image(ctx context.Context, workDir string) (v1.Image, error) {
	if o.img != nil {
		return o.img, nil
	}
	tmp := filepath.Join(workDir, "docker-save.tar")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	// Save by ID: a tag moved since resolving must not change the content.
	err = o.docker.save(ctx, o.digest, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	img, err := gcrtarball.ImageFromPath(tmp, nil)
	if err != nil {
		return nil, fmt.Errorf("read docker save of %s: %w", o.ref.Name, err)
	}
	cn, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("read docker save of %s: %w", o.ref.Name, err)
	}
	if cn.String() != o.digest {
		return nil, fmt.Errorf("docker save of %s returned image %s, want %s", o.ref.Name, cn, o.digest)
	}
	o.img = img
	return img, nil
}

// stageOCI flattens the image's layers into root, then returns the stager
// and the image's environment (KEY=VALUE).
func stageOCI(ctx context.Context, root, workDir string, o *ociSource, arch string, progress func(string)) (*stager, []string, error) {
	progress("fetch " + o.ref.Kind)
	img, err := o.image(ctx, workDir)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	if cfg.OS != "" && cfg.OS != "linux" || cfg.Architecture != "" && cfg.Architecture != arch {
		return nil, nil, fmt.Errorf("image is for %s/%s; the guest is linux/%s", cfg.OS, cfg.Architecture, arch)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, fmt.Errorf("image layers: %w", err)
	}
	s := &stager{root: root, owners: map[string]owner{}}
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, nil, err
	}
	for i, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		progress(fmt.Sprintf("layer %d/%d %s (%s)", i+1, len(layers), shortDigest(d.String()), sizeText(size)))
		if err := applyLayerFrom(ctx, s, l); err != nil {
			return nil, nil, fmt.Errorf("layer %d (%s): %w", i+1, d, err)
		}
	}
	if err := s.ensureMountPoints(); err != nil {
		return nil, nil, err
	}
	if err := s.rescan(); err != nil {
		return nil, nil, err
	}
	return s, cfg.Config.Env, nil
}

func applyLayerFrom(ctx context.Context, s *stager, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	err = s.applyLayer(ctx, rc)
	if err == nil {
		// Read to the end so the layer's digest check runs.
		_, err = io.Copy(io.Discard, rc)
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// mergeEnv puts recipe env over the image's KEY=VALUE list, sorted.
func mergeEnv(base []string, recipe map[string]string) []string {
	m := map[string]string{}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE.MatchString(k) || strings.ContainsRune(v, 0) {
			continue
		}
		m[k] = v
	}
	for k, v := range recipe {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

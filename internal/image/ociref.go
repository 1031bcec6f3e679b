package image

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Kinds of OCI rootfs references (rootfs.image); see docs/recipes.md.
const (
	OCIRegistry      = "registry"       // [docker://]HOST/REPO[:TAG|@DIGEST]
	OCIDockerDaemon  = "docker-daemon"  // docker-daemon:NAME[:TAG] or docker-daemon:sha256:ID
	OCILayout        = "oci-layout"     // oci-layout:DIR[:NAME|@DIGEST]
	OCIArchive       = "oci-archive"    // oci-archive:FILE.tar[:NAME|@DIGEST]
	OCIDockerArchive = "docker-archive" // docker-archive:FILE.tar (docker save)
)

var (
	sha256DigestRE = lazyRE(`^sha256:[0-9a-f]{64}$`)
	// Docker names: repository[:tag][@digest] or an image ID; the daemon
	// checks the rest.
	dockerNameRE = lazyRE(`^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$`)
	// ref.name annotations: the OCI image-layout "ref" grammar, loosely.
	layoutNameRE = lazyRE(`^[A-Za-z0-9._-][A-Za-z0-9._+-]{0,127}$`)
)

// ociRef is a parsed rootfs.image.
type ociRef struct {
	Kind   string
	Name   string // registry reference or Docker image name/ID
	Path   string // layout directory or archive file, as written
	Select string // layout/archive: org.opencontainers.image.ref.name to pick
	Digest string // layout/archive: manifest digest to pick
}

// parseOCIRef parses rootfs.image. A reference without a known
// "kind:" prefix is a registry reference.
func parseOCIRef(s string) (ociRef, error) {
	if s == "" || strings.ContainsAny(s, "\x00\n\r\t ") {
		return ociRef{}, fmt.Errorf("image reference %q: empty or contains whitespace", s)
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		kind, rest = OCIRegistry, s
	}
	switch kind {
	case OCIDockerDaemon:
		if !dockerNameRE.MatchString(rest) || strings.Contains(rest, "..") {
			return ociRef{}, fmt.Errorf("image reference %q: want docker-daemon:NAME[:TAG] or docker-daemon:sha256:ID", s)
		}
		return ociRef{Kind: kind, Name: rest}, nil
	case OCIDockerArchive:
		if rest == "" {
			return ociRef{}, fmt.Errorf("image reference %q: want docker-archive:FILE", s)
		}
		return ociRef{Kind: kind, Path: rest}, nil
	case OCILayout, OCIArchive:
		return parseLocalOCIRef(kind, rest, s)
	case "docker":
		// docker://HOST/REPO as skopeo writes it.
		if !strings.HasPrefix(rest, "//") {
			return ociRef{}, fmt.Errorf("image reference %q: want docker://HOST/REPO[:TAG]", s)
		}
		rest = strings.TrimPrefix(rest, "//")
		return parseRegistryRef(rest, s)
	case "registry":
		return parseRegistryRef(rest, s)
	default:
		// "alpine:3.20" and "localhost:5000/x" are registry references.
		return parseRegistryRef(s, s)
	}
}

func parseRegistryRef(r, orig string) (ociRef, error) {
	ref, err := name.ParseReference(r)
	if err != nil {
		return ociRef{}, fmt.Errorf("image reference %q: %w", orig, err)
	}
	return ociRef{Kind: OCIRegistry, Name: ref.String()}, nil
}

// parseLocalOCIRef splits "DIR[:NAME|@sha256:HEX]". A colon starts NAME only
// when what follows has no slash, so "a:b/dir" stays a path.
func parseLocalOCIRef(kind, rest, orig string) (ociRef, error) {
	out := ociRef{Kind: kind, Path: rest}
	if i := strings.LastIndex(rest, "@"); i >= 0 && strings.HasPrefix(rest[i+1:], "sha256:") {
		if !sha256DigestRE.MatchString(rest[i+1:]) {
			return ociRef{}, fmt.Errorf("image reference %q: bad digest %q", orig, rest[i+1:])
		}
		out.Path, out.Digest = rest[:i], rest[i+1:]
	} else if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i+1:], "/") {
		if !layoutNameRE.MatchString(rest[i+1:]) {
			return ociRef{}, fmt.Errorf("image reference %q: bad image name %q", orig, rest[i+1:])
		}
		out.Path, out.Select = rest[:i], rest[i+1:]
	}
	if out.Path == "" {
		return ociRef{}, fmt.Errorf("image reference %q: missing path", orig)
	}
	return out, nil
}

// isLocal reports whether the reference names a file on this host.
func (r ociRef) isLocal() bool {
	return r.Kind == OCILayout || r.Kind == OCIArchive || r.Kind == OCIDockerArchive
}

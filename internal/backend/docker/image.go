package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ImageRepo is the local repository our images are imported into. Nothing
// is ever pulled or pushed.
const ImageRepo = "mvm-image"

// imageFormat changes whenever the conversion (tar layout, entrypoint,
// labels) changes, so old tags are not reused for a different result.
const imageFormat = "1"

// agentEntrypoint starts the agent in container mode; Cmd adds the flags.
var agentEntrypoint = []string{"/sbin/mvm-agent", "container"}

// imageTag derives the content-addressed tag from the image digest
// ("sha256:<hex>", from internal/image) and the conversion format.
func imageTag(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex + "-f" + imageFormat
}

// fileDigest hashes the rootfs when the caller gave no digest.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// importChanges are the Dockerfile instructions applied on import.
func importChanges(digest string) []string {
	ep, _ := json.Marshal(agentEntrypoint)
	return []string{
		"ENTRYPOINT " + string(ep),
		"CMD []",
		`LABEL mvm.managed="1"`,
		fmt.Sprintf("LABEL mvm.digest=%q", digest),
	}
}

// ensureImage returns the local image reference for the rootfs, importing it
// on first use. Two concurrent imports of the same rootfs produce the same
// content under the same tag, so no lock is needed.
func (e *engine) ensureImage(ctx context.Context, rootfs, digest, scratch string) (string, error) {
	if digest == "" {
		d, err := fileDigest(rootfs)
		if err != nil {
			return "", fmt.Errorf("hash rootfs: %w", err)
		}
		digest = d
	}
	ref := ImageRepo + ":" + imageTag(digest)
	ok, err := e.imageExists(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	if ok {
		return ref, nil
	}
	tmp, err := os.MkdirTemp(scratch, ".rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "root")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", err
	}
	if err := extractRootfs(ctx, rootfs, tree); err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := writeTar(ctx, tree, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	err = e.importImage(ctx, ImageRepo, imageTag(digest), importChanges(digest), pr)
	pr.Close() // unblocks the writer if the daemon stopped reading early
	if terr := <-werr; err == nil && terr != nil {
		err = terr
	}
	if err != nil {
		return "", fmt.Errorf("import %s as %s: %w", rootfs, ref, err)
	}
	return ref, nil
}

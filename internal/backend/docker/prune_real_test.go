package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// tinyTar is a root filesystem with one file: enough for docker import.
func tinyTar(t *testing.T) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	body := []byte("mvm prune test\n")
	if err := tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &b
}

// TestPruneImagesReal imports a labelled (mvm.managed=1) and an unlabelled
// image carrying the same fake mvm.digest, prunes that digest, and checks
// that only the labelled one is gone. Other images on the host are kept by
// the keep function, so the test touches nothing but its own two images.
func TestPruneImagesReal(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Docker daemon (skipped with -short)")
	}
	e, err := newEngine()
	if err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	if err := e.available(context.Background()); err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var rnd [8]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	digest := "sha256:" + id + id + id + id // fake, 64 hex digits
	managed := ImageRepo + "-prunetest:" + id
	plain := "mvm-prunetest-plain:" + id
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, ref := range []string{managed, plain} {
			_ = e.do(ctx, http.MethodDelete, "/images/"+url.PathEscape(ref), url.Values{"force": {"1"}}, nil, "", nil)
		}
	})
	repo, tag, _ := strings.Cut(managed, ":")
	if err := e.importImage(ctx, repo, tag, []string{`LABEL mvm.managed="1"`, `LABEL mvm.digest="` + digest + `"`}, tinyTar(t)); err != nil {
		t.Fatalf("import labelled image: %v", err)
	}
	repo, tag, _ = strings.Cut(plain, ":")
	if err := e.importImage(ctx, repo, tag, []string{`LABEL mvm.digest="` + digest + `"`}, tinyTar(t)); err != nil {
		t.Fatalf("import unlabelled image: %v", err)
	}

	imgs, err := e.listImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found *ManagedImage
	for i := range imgs {
		if slices.Contains(imgs[i].Refs, plain) {
			t.Errorf("unlabelled image listed as managed: %+v", imgs[i])
		}
		if slices.Contains(imgs[i].Refs, managed) {
			found = &imgs[i]
		}
	}
	if found == nil || found.Digest != digest || found.Bytes <= 0 || found.InUse {
		t.Fatalf("labelled image listed as %+v", found)
	}

	removed, err := e.pruneImages(ctx, func(d string) bool { return d != digest })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{managed}) {
		t.Errorf("removed %v, want [%s]", removed, managed)
	}
	if ok, err := e.imageExists(ctx, managed); err != nil || ok {
		t.Errorf("labelled image still present (%v)", err)
	}
	if ok, err := e.imageExists(ctx, plain); err != nil || !ok {
		t.Errorf("unlabelled image removed (%v)", err)
	}
}

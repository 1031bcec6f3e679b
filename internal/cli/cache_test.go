package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/image"
)

// fakeDocker stands in for the daemon; removed collects what prune deleted.
type fakeDocker struct {
	down    bool
	imgs    []docker.ManagedImage
	removed []string
}

func (f *fakeDocker) install(t *testing.T) {
	old := dockerAPI
	dockerAPI.available = func(context.Context) error {
		if f.down {
			return errors.New("docker daemon not running: no socket at /nope")
		}
		return nil
	}
	dockerAPI.list = func(context.Context) ([]docker.ManagedImage, error) { return f.imgs, nil }
	dockerAPI.prune = func(_ context.Context, keep func(string) bool) ([]string, error) {
		var out []string
		for _, im := range f.imgs {
			if !im.InUse && !keep(im.Digest) {
				out = append(out, im.Refs...)
			}
		}
		f.removed = append(f.removed, out...)
		return out, nil
	}
	t.Cleanup(func() { dockerAPI = old })
}

// cachedImage writes a complete, named image entry into the cache and
// returns its digest.
func cachedImage(t *testing.T, cacheDir, name string) string {
	t.Helper()
	hex := strings.Repeat("ab", 32)
	dir := filepath.Join(cacheDir, "images", hex)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "rootfs.ext4"} {
		if err := writeFile(filepath.Join(dir, f), "x"); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(map[string]any{"name": name, "digest": "sha256:" + hex, "kernel": "vmlinuz", "initrd": "initrd.img", "rootfs": "rootfs.ext4"})
	if err := writeFile(filepath.Join(dir, "manifest.json"), string(m)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cacheDir, "images", "by-name"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..", hex), filepath.Join(cacheDir, "images", "by-name", name)); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex
}

func runIn(t *testing.T, cache string, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("MVM_STATE_DIR", t.TempDir())
	t.Setenv("MVM_CACHE_DIR", cache)
	t.Setenv("MVM_CONFIG_DIR", t.TempDir())
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCachePruneDockerImages(t *testing.T) {
	cache := t.TempDir()
	kept := cachedImage(t, cache, "minimal")
	f := &fakeDocker{imgs: []docker.ManagedImage{
		{ID: "sha256:1", Refs: []string{"mvm-image:abababababab-f1"}, Digest: kept, Bytes: 10},
		{ID: "sha256:2", Refs: []string{"mvm-image:cdcdcdcdcdcd-f1"}, Digest: "sha256:" + strings.Repeat("cd", 32), Bytes: 20},
		{ID: "sha256:3", Refs: []string{"mvm-image:efefefefefef-f1"}, Digest: "sha256:" + strings.Repeat("ef", 32), Bytes: 40, InUse: true},
	}}
	f.install(t)

	code, out, errs := runIn(t, cache, "cache", "prune", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res image.PruneResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, it := range res.Items {
		if it.Kind == kindDockerImage {
			got[it.Name] = it.Removed
		}
	}
	want := map[string]bool{"mvm-image:abababababab-f1": false, "mvm-image:cdcdcdcdcdcd-f1": true, "mvm-image:efefefefefef-f1": false}
	if len(got) != len(want) || !res.DryRun || res.Bytes != 20 {
		t.Errorf("dry run plan %v, bytes %d", got, res.Bytes)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: removed=%v, want %v", k, got[k], v)
		}
	}
	if len(f.removed) != 0 {
		t.Fatalf("dry run removed %v", f.removed)
	}

	code, out, errs = runIn(t, cache, "cache", "prune")
	if code != 0 || !strings.Contains(out, "Removed docker-image mvm-image:cdcdcdcdcdcd-f1") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !slices.Equal(f.removed, []string{"mvm-image:cdcdcdcdcdcd-f1"}) {
		t.Errorf("removed %v", f.removed)
	}
}

func TestCacheInfoDocker(t *testing.T) {
	cache := t.TempDir()
	cachedImage(t, cache, "minimal")
	f := &fakeDocker{imgs: []docker.ManagedImage{{ID: "sha256:1", Refs: []string{"mvm-image:x-f1"}, Bytes: 1 << 20}}}
	f.install(t)
	code, out, errs := runIn(t, cache, "cache", "info", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var info image.CacheInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]image.CacheKindTotal{}
	for _, k := range info.Kinds {
		kinds[k.Kind] = k
	}
	if kinds[image.KindImage].Count != 1 || kinds[kindDockerImage].Count != 1 || kinds[kindDockerImage].Bytes != 1<<20 || len(info.Notes) != 0 {
		t.Errorf("info %+v", info)
	}

	// An unreachable daemon is a note, not an error.
	f.down = true
	code, out, errs = runIn(t, cache, "cache", "info")
	if code != 0 || strings.Contains(out, kindDockerImage) || !strings.Contains(errs, "note: docker images not included") {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = runIn(t, cache, "cache", "prune", "--dry-run")
	if code != 0 || !strings.Contains(errs, "note: docker images not included") {
		t.Errorf("prune: exit %d\n%s", code, errs)
	}
}

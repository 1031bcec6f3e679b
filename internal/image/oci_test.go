package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	gcrtarball "github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestParseOCIRef(t *testing.T) {
	cases := []struct {
		in   string
		want ociRef
		bad  bool
	}{
		{in: "alpine:3.20", want: ociRef{Kind: OCIRegistry, Name: "alpine:3.20"}},
		{in: "docker://127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64), want: ociRef{Kind: OCIRegistry, Name: "127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64)}},
		{in: "localhost:5000/x", want: ociRef{Kind: OCIRegistry, Name: "localhost:5000/x"}},
		{in: "docker-daemon:myapp:1.0", want: ociRef{Kind: OCIDockerDaemon, Name: "myapp:1.0"}},
		{in: "docker-daemon:sha256:" + strings.Repeat("b", 64), want: ociRef{Kind: OCIDockerDaemon, Name: "sha256:" + strings.Repeat("b", 64)}},
		{in: "oci-layout:./out", want: ociRef{Kind: OCILayout, Path: "./out"}},
		{in: "oci-layout:/x/out:app", want: ociRef{Kind: OCILayout, Path: "/x/out", Select: "app"}},
		{in: "oci-layout:/a:b/out", want: ociRef{Kind: OCILayout, Path: "/a:b/out"}},
		{in: "oci-archive:img.tar@sha256:" + strings.Repeat("c", 64), want: ociRef{Kind: OCIArchive, Path: "img.tar", Digest: "sha256:" + strings.Repeat("c", 64)}},
		{in: "docker-archive:save.tar", want: ociRef{Kind: OCIDockerArchive, Path: "save.tar"}},
		{in: "", bad: true},
		{in: "a b", bad: true},
		{in: "oci-layout:", bad: true},
		{in: "oci-layout:/x@sha256:zz", bad: true},
		{in: "docker-daemon:", bad: true},
		{in: "docker:no-slashes", bad: true},
		{in: "UPPER/case", bad: true},
	}
	for _, c := range cases {
		got, err := parseOCIRef(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error, got %+v", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// testLayer makes a gzip-compressed layer from tar entries.
func testLayer(t *testing.T, ents ...tent) v1.Layer {
	t.Helper()
	b := layerTar(t, ents...)
	l, err := gcrtarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage is a three-layer image exercising whiteouts, owners and modes,
// with a random layer in the middle.
func testImage(t *testing.T, marker string) v1.Image {
	t.Helper()
	base := testLayer(t,
		dir("etc/"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
		dir("bin/"), file("bin/keep", "keep"),
		dir("opt/"), file("opt/gone", "gone"), dir("opt/sub/"), file("opt/sub/a", "a"), file("opt/sub/b", "b"),
		dir("var/"), dir("var/opq/"), file("var/opq/old", "old"),
		tent{name: "home/", typ: tar.TypeDir, mode: 0o755},
		tent{name: "home/app/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		tent{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		tent{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		tent{name: "usr/bin/su-ish", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"},
	)
	rnd, err := random.Layer(2048, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	top := testLayer(t,
		wh("opt/.wh.gone"), wh("opt/sub/.wh.a"),
		wh("var/opq/.wh..wh..opq"), file("var/opq/new", "new"),
		file("etc/marker", marker),
	)
	img, err := mutate.AppendLayers(empty.Image, base, rnd, top)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FROM_IMAGE=yes", "OVERRIDE=image"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const ociRecipeTail = `
[env]
OVERRIDE = "recipe"

[[files]]
path = "/etc/added"
content = "added\n"

[[services]]
name = "sleeper"
command = ["/bin/sleep", "1000"]
`

// checkOCIRootfs asserts the flattened test image and the injected files.
func checkOCIRootfs(t *testing.T, a *Artifacts, marker string) {
	t.Helper()
	fsck(t, a.Rootfs)
	present := map[string]string{"/bin/keep": "keep", "/opt/sub/b": "b", "/var/opq/new": "new", "/etc/marker": marker, "/etc/added": "added\n"}
	for p, want := range present {
		if got := debugfs(t, a.Rootfs, "cat "+p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"/opt/gone", "/opt/sub/a", "/var/opq/old", "/opt/.wh.gone", "/var/opq/.wh..wh..opq"} {
		if s := debugfs(t, a.Rootfs, "stat "+p); strings.Contains(s, "Inode:") {
			t.Errorf("%s present; whiteout not applied", p)
		}
	}
	if s := debugfs(t, a.Rootfs, "stat /sbin/mvm-agent"); !strings.Contains(s, "Mode:  0755") {
		t.Errorf("agent missing:\n%s", s)
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/mnt/config", "/etc/mvm/services.d"} {
		if s := debugfs(t, a.Rootfs, "stat "+d); !strings.Contains(s, "Type: directory") {
			t.Errorf("%s missing", d)
		}
	}
	if s := debugfs(t, a.Rootfs, "stat /home/app"); !strings.Contains(s, "User:  1000") || !strings.Contains(s, "Group:  1000") {
		t.Errorf("/home/app lost its owner:\n%s", s)
	}
	if s := debugfs(t, a.Rootfs, "stat /usr/bin/su-ish"); !strings.Contains(s, "Mode:  04755") {
		t.Errorf("setuid mode lost:\n%s", s)
	}
	var gi GuestImage
	if err := json.Unmarshal([]byte(debugfs(t, a.Rootfs, "cat /etc/mvm/image.json")), &gi); err != nil {
		t.Fatal(err)
	}
	env := strings.Join(gi.Env, " ")
	for _, want := range []string{"FROM_IMAGE=yes", "OVERRIDE=recipe", "PATH=/usr/local/bin:/usr/bin:/bin"} {
		if !strings.Contains(env, want) {
			t.Errorf("image env %q lacks %s", env, want)
		}
	}
	if !strings.Contains(debugfs(t, a.Rootfs, "cat /etc/mvm/services.d/sleeper.json"), `"/bin/sleep"`) {
		t.Error("service file missing")
	}
}

func buildOCI(t *testing.T, ctx context.Context, cache, agent, dir, ref string) *Artifacts {
	t.Helper()
	rec := "name = \"oci-test\"\n[rootfs]\nsource = \"oci\"\nimage = \"" + ref + "\"\nfree_mib = 8\n" + ociRecipeTail
	r, err := ParseRecipe("oci.toml", []byte(rec), dir)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	start := time.Now()
	a, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent,
		Progress: func(s string) { stages = append(stages, s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v, stages %q", ref, time.Since(start).Round(time.Millisecond), stages)
	return a
}

func TestOCIRegistry(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/test/app:v1"
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img := testImage(t, "one")
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "images")
	a := buildOCI(t, ctx, cache, agent, t.TempDir(), ref)
	checkOCIRootfs(t, a, "one")

	// The manifest digest is recorded as the image input.
	want, _ := img.Digest()
	mb, err := os.ReadFile(filepath.Join(a.Dir, manifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mb), want.Hex) {
		t.Errorf("manifest does not record image digest %s", want)
	}

	// Cache hit: one manifest request, no rebuild.
	start := time.Now()
	b := buildOCI(t, ctx, cache, agent, t.TempDir(), ref)
	if hit := time.Since(start); b.Digest != a.Digest || hit > 2*time.Second {
		t.Errorf("cache hit %v digest %s (first %s)", hit, b.Digest, a.Digest)
	}

	// Moving the tag rebuilds.
	if err := remote.Write(tag, testImage(t, "two"), remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	c := buildOCI(t, ctx, cache, agent, t.TempDir(), ref)
	if c.Digest == a.Digest {
		t.Fatal("new image under the same tag kept the digest")
	}
	checkOCIRootfs(t, c, "two")

	// A missing image is a clear error.
	rec := "name = \"x\"\n[rootfs]\nsource = \"oci\"\nimage = \"" + host + "/nope:v1\"\n"
	r, err := ParseRecipe("x.toml", []byte(rec), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing image: %v", err)
	}
}

func TestOCILayoutAndArchive(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(testImage(t, "layout"), types.OCIManifestSchema1)
	other, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "app"})); err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(other, layout.WithAnnotations(map[string]string{refNameAnnotation: "other"})); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "images")

	// Two images: a bare path is ambiguous.
	r, err := ParseRecipe("l.toml", []byte("name = \"l\"\n[rootfs]\nsource = \"oci\"\nimage = \"oci-layout:layout\"\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent}); err == nil || !strings.Contains(err.Error(), "2 images match") {
		t.Errorf("ambiguous layout: %v", err)
	}

	a := buildOCI(t, ctx, cache, agent, dir, "oci-layout:layout:app")
	checkOCIRootfs(t, a, "layout")
	d, _ := img.Digest()
	b := buildOCI(t, ctx, cache, agent, dir, "oci-layout:"+filepath.Join(dir, "layout")+"@"+d.String())
	checkOCIRootfs(t, b, "layout")

	// The same layout as a tarball.
	arch := filepath.Join(dir, "img.tar")
	tarDir(t, filepath.Join(dir, "layout"), arch)
	c := buildOCI(t, ctx, cache, agent, dir, "oci-archive:img.tar:app")
	checkOCIRootfs(t, c, "layout")

	// A corrupted layer blob is detected.
	l, _ := img.Layers()
	ld, _ := l[2].Digest()
	blob := filepath.Join(dir, "layout", "blobs", "sha256", ld.Hex)
	os.Chmod(blob, 0o644)
	data, _ := os.ReadFile(blob)
	bad, _ := gzipBytes(t, []byte("corrupt"))
	if err := os.WriteFile(blob, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(blob, data, 0o644)
	r2, _ := ParseRecipe("l.toml", []byte("name = \"l2\"\n[rootfs]\nsource = \"oci\"\nimage = \"oci-layout:layout:app\"\nfree_mib = 9\n"), dir)
	if _, err := EnsureRecipe(ctx, r2, BuildOptions{CacheDir: cache, AgentPath: agent}); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Errorf("corrupt layer: %v", err)
	}
}

func gzipBytes(t *testing.T, b []byte) ([]byte, error) {
	t.Helper()
	l, err := gcrtarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// tarDir writes dir's files into a tar at dst.
func tarDir(t *testing.T, dir, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestOCIDockerDaemon imports a small tar into the local Docker daemon
// (docker import) and builds from it.
func TestOCIDockerDaemon(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := newDockerClient()
	if err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := c.call(pctx, http.MethodGet, "/_ping", nil)
	pcancel()
	if err != nil {
		t.Skipf("needs a running Docker daemon: %v", err)
	}
	resp.Body.Close()

	var rnd [6]byte
	rand.Read(rnd[:])
	repo, tagName := "mvm-oci-test", hex.EncodeToString(rnd[:])
	body := layerTar(t, dir("etc/"), file("etc/hello", "from docker\n"), dir("bin/"), file("bin/tool", "#!/bin/sh\n"),
		tent{name: "srv/", typ: tar.TypeDir, mode: 0o750, uid: 33, gid: 33})
	resp, err = c.call(ctx, http.MethodPost, "/images/create?fromSrc=-&repo="+repo+"&tag="+tagName, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("docker import: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ref := repo + ":" + tagName
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if resp, err := c.call(dctx, http.MethodDelete, "/images/"+ref+"?force=1", nil); err == nil {
			resp.Body.Close()
		}
	}()

	cache := filepath.Join(t.TempDir(), "images")
	r, err := ParseRecipe("d.toml", []byte("name = \"docker-test\"\n[rootfs]\nsource = \"oci\"\nimage = \"docker-daemon:"+ref+"\"\nfree_mib = 8\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker-daemon build %v", time.Since(start))
	fsck(t, a.Rootfs)
	if got := debugfs(t, a.Rootfs, "cat /etc/hello"); got != "from docker\n" {
		t.Errorf("/etc/hello = %q", got)
	}
	if s := debugfs(t, a.Rootfs, "stat /srv"); !strings.Contains(s, "User:    33") {
		t.Errorf("/srv owner:\n%s", s)
	}
	if s := debugfs(t, a.Rootfs, "stat /sbin/mvm-agent"); !strings.Contains(s, "Type: regular") {
		t.Errorf("agent missing:\n%s", s)
	}
	start = time.Now()
	b, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil || b.Digest != a.Digest {
		t.Fatalf("rebuild: %v %v", b, err)
	}
	t.Logf("docker-daemon cache hit %v", time.Since(start))

	// A missing image names the fix.
	r2, _ := ParseRecipe("d.toml", []byte("name = \"docker-missing\"\n[rootfs]\nsource = \"oci\"\nimage = \"docker-daemon:mvm-oci-test:does-not-exist\"\n"), "")
	if _, err := EnsureRecipe(ctx, r2, BuildOptions{CacheDir: cache, AgentPath: agent}); err == nil || !strings.Contains(err.Error(), "not found in the local daemon") {
		t.Errorf("missing docker image: %v", err)
	}
}

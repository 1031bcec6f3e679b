package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// reproRecipe is the smallest Debian recipe that still goes through
// mmdebstrap: minbase plus one tiny package.
const reproRecipe = `name = "repro-hello"
[rootfs]
source = "debian"
suite = "bookworm"
packages = ["hello"]
`

// TestDebianReproducible checks issue #5's "same inputs, byte-identical
// rootfs" for Debian images twice over: two fresh image caches sharing one
// bootstrap tarball must give identical rootfs.ext4 bytes, and two
// mmdebstrap runs from scratch must give identical tarballs whenever the
// mirror served the same package versions to both.
func TestDebianReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mmdebstrap against the Debian mirror (~1 min per bootstrap); skipped with -short")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("needs mmdebstrap (package mmdebstrap)")
	}
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, err := ParseRecipe("repro-hello.toml", []byte(reproRecipe), "")
	if err != nil {
		t.Fatal(err)
	}
	// MVM_TEST_IMAGE_CACHE lets repeated runs share the bootstrap tarball;
	// the image caches themselves are always fresh.
	shared := filepath.Join(t.TempDir(), "bootstrap")
	if c := os.Getenv("MVM_TEST_IMAGE_CACHE"); c != "" {
		shared = filepath.Join(c, bootstrapDir)
	}
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}

	build := func(label string) *Artifacts {
		t.Helper()
		cache := filepath.Join(t.TempDir(), label)
		if err := os.Mkdir(cache, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(shared, filepath.Join(cache, bootstrapDir)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %s: %v, %s", label, time.Since(start), a.Digest)
		return a
	}
	a := build("a")
	b := build("b")
	fsck(t, a.Rootfs)
	if a.Digest != b.Digest {
		t.Errorf("digest differs between fresh caches: %s vs %s", a.Digest, b.Digest)
	}
	if off, err := firstDiff(a.Rootfs, b.Rootfs); err != nil {
		t.Fatal(err)
	} else if off >= 0 {
		t.Errorf("rootfs.ext4 differs between fresh caches from byte %d (block %d)", off, off/4096)
	}

	// From scratch: the cached tarball against a new mmdebstrap run. When
	// the mirror moved since the cached one was made, a second fresh run
	// gives a pair made minutes apart.
	da, err := debArch(runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	key := bootstrapKey{Suite: r.Rootfs.Suite, Packages: r.Rootfs.Packages, Arch: da}
	cached, err := ensureBootstrap(ctx, shared, key)
	if err != nil {
		t.Fatal(err)
	}
	checkBootstrapClean(t, cached.Path)
	fresh := func() *bootstrapTarball {
		t.Helper()
		start := time.Now()
		b, err := ensureBootstrap(ctx, t.TempDir(), key)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("bootstrap from scratch: %v", time.Since(start))
		return b
	}
	x, y := cached, fresh()
	vx, vy := dpkgVersions(t, x.Path), dpkgVersions(t, y.Path)
	if !maps.Equal(vx, vy) {
		t.Logf("mirror moved since the cached bootstrap (%s); bootstrapping again", versionDiff(vx, vy))
		x, vx = y, vy
		y = fresh()
		vy = dpkgVersions(t, y.Path)
	}
	if !maps.Equal(vx, vy) {
		t.Skipf("mirror served different packages to the two bootstraps (%s); nothing to compare", versionDiff(vx, vy))
	}
	t.Logf("%d packages in both bootstraps", len(vx))
	if x.SHA256 != y.SHA256 {
		t.Errorf("bootstraps of the same package versions differ:\n%s", strings.Join(tarDiff(t, x.Path, y.Path), "\n"))
	}
}

// checkBootstrapClean asserts the base carries nothing of the build host or
// of the run that made it; a second bootstrap on the same host would not
// notice the host's name or name servers.
func checkBootstrapClean(t *testing.T, tarPath string) {
	t.Helper()
	perRun := map[string]bool{ // mmdebstrap drops these under SOURCE_DATE_EPOCH
		"var/cache/ldconfig/aux-cache": true, "var/log/dpkg.log": true, "var/log/alternatives.log": true,
		"var/log/apt/history.log": true, "var/log/apt/term.log": true, "var/log/apt/eipp.log.xz": true,
		"var/log/bootstrap.log": true, "etc/resolv.conf": true,
	}
	epoch := fixedTime.Unix()
	walkTar(t, tarPath, func(h *tar.Header, r io.Reader) {
		n := strings.TrimPrefix(h.Name, "./")
		switch {
		case perRun[n]:
			t.Errorf("bootstrap keeps %s", n)
		case strings.HasPrefix(n, "etc/ssh/ssh_host_"):
			t.Errorf("bootstrap keeps host key %s", n)
		case strings.HasPrefix(n, "var/lib/apt/lists/") && h.Typeflag == tar.TypeReg && h.Size > 0:
			t.Errorf("bootstrap keeps apt list %s", n)
		case n == "etc/hostname":
			if b, _ := io.ReadAll(r); string(b) != "mvm\n" || h.Mode&0o777 != 0o644 {
				t.Errorf("/etc/hostname = %q mode %o, want the placeholder", b, h.Mode)
			}
		case n == "etc/machine-id":
			if b, _ := io.ReadAll(r); len(b) != 0 && string(b) != "uninitialized\n" {
				t.Errorf("/etc/machine-id = %q, want empty", b)
			}
		}
		if h.ModTime.Unix() > epoch {
			t.Errorf("%s: mtime %v after SOURCE_DATE_EPOCH", n, h.ModTime)
		}
	})
}

// firstDiff returns the offset of the first differing byte of two files, or
// -1 when they are equal.
func firstDiff(p, q string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	g, err := os.Open(q)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	bf, bg := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		n, ferr := io.ReadFull(f, bf)
		m, gerr := io.ReadFull(g, bg)
		k := min(n, m)
		if i := firstMismatch(bf[:k], bg[:k]); i >= 0 {
			return off + int64(i), nil
		}
		if n != m {
			return off + int64(k), nil
		}
		off += int64(n)
		fdone := errors.Is(ferr, io.EOF) || errors.Is(ferr, io.ErrUnexpectedEOF)
		gdone := errors.Is(gerr, io.EOF) || errors.Is(gerr, io.ErrUnexpectedEOF)
		if fdone && gdone {
			return -1, nil
		}
		if ferr != nil && !fdone {
			return 0, ferr
		}
		if gerr != nil && !gdone {
			return 0, gerr
		}
	}
}

func firstMismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// dpkgVersions reads package=version from the tarball's dpkg status.
func dpkgVersions(t *testing.T, tarPath string) map[string]string {
	t.Helper()
	var status []byte
	walkTar(t, tarPath, func(h *tar.Header, r io.Reader) {
		if strings.TrimPrefix(h.Name, "./") == "var/lib/dpkg/status" {
			status, _ = io.ReadAll(r)
		}
	})
	if status == nil {
		t.Fatalf("%s has no var/lib/dpkg/status", tarPath)
	}
	out := map[string]string{}
	var pkg string
	sc := bufio.NewScanner(bytes.NewReader(status))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Package: "); ok {
			pkg = v
		} else if v, ok := strings.CutPrefix(line, "Version: "); ok && pkg != "" {
			out[pkg] = v
		}
	}
	return out
}

func versionDiff(a, b map[string]string) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if b[k] != a[k] {
			d = append(d, fmt.Sprintf("%s %q->%q", k, a[k], b[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s new %q", k, b[k]))
		}
	}
	return strings.Join(d, ", ")
}

// tarDiff names the entries whose header or content differ, so a failure
// says which file still varies between bootstraps.
func tarDiff(t *testing.T, p, q string) []string {
	t.Helper()
	sum := func(path string) (map[string]string, []string) {
		m := map[string]string{}
		var order []string
		walkTar(t, path, func(h *tar.Header, r io.Reader) {
			hs := sha256.New()
			_, _ = io.Copy(hs, r)
			m[h.Name] = fmt.Sprintf("mode=%o uid=%d gid=%d mtime=%d type=%c link=%q size=%d sha=%s",
				h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), h.Typeflag, h.Linkname, h.Size, hex.EncodeToString(hs.Sum(nil))[:12])
			order = append(order, h.Name)
		})
		return m, order
	}
	a, ao := sum(p)
	b, bo := sum(q)
	var d []string
	for _, n := range ao {
		if b[n] != a[n] {
			d = append(d, fmt.Sprintf("  %s: %s | %s", n, a[n], b[n]))
		}
	}
	for _, n := range bo {
		if _, ok := a[n]; !ok {
			d = append(d, fmt.Sprintf("  %s: only in the second", n))
		}
	}
	if len(d) == 0 && !slices.Equal(ao, bo) {
		d = append(d, "  same entries in a different order")
	}
	if len(d) == 0 {
		d = append(d, "  same entries; the archive encoding differs")
	}
	if len(d) > 40 {
		d = append(d[:40], fmt.Sprintf("  ... %d more", len(d)-40))
	}
	return d
}

func walkTar(t *testing.T, path string, fn func(*tar.Header, io.Reader)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		fn(h, tr)
	}
}

func TestFirstDiff(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 3<<20)
	changed := bytes.Clone(big)
	changed[2<<20+5] = 8
	tests := []struct {
		name string
		a, b []byte
		want int64
	}{
		{"empty", nil, nil, -1},
		{"equal", big, big, -1},
		{"byte", big, changed, 2<<20 + 5},
		{"prefix", big[:10], big, 10},
		{"first", []byte("ab"), []byte("xb"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, q := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			if err := os.WriteFile(p, tc.a, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(q, tc.b, 0o644); err != nil {
				t.Fatal(err)
			}
			if got, err := firstDiff(p, q); err != nil || got != tc.want {
				t.Errorf("firstDiff = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

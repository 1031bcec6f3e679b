package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const showMeta = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192-2)
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-99-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel.
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

`

func showKernel(sum string) string {
	return fmt.Sprintf(`Package: linux-image-6.1.0-99-cloud-amd64
Version: 1:6.1.192-2
Architecture: amd64
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/main/l/linux/linux-image-6.1.0-99-cloud-amd64_6.1.192-2_amd64.deb
SHA256: %s

Package: linux-image-6.1.0-99-cloud-amd64
Version: 6.1.100-1
Architecture: amd64
`, strings.ToUpper(sum))
}

func TestParseAptShow(t *testing.T) {
	p, err := parseAptShow([]byte(showKernel("ab")))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "linux-image-6.1.0-99-cloud-amd64" || p.Version != "1:6.1.192-2" || p.SHA256 != "ab" || p.Arch != "amd64" {
		t.Errorf("parsed %+v", p)
	}
	if got := strings.Join(p.Depends, ","); got != "kmod,linux-base,initramfs-tools,linux-initramfs-tool" {
		t.Errorf("depends %s", got)
	}
	if p.fileName() != "linux-image-6.1.0-99-cloud-amd64_1%3a6.1.192-2_amd64.deb" {
		t.Errorf("file name %s", p.fileName())
	}
	if _, err := parseAptShow([]byte("N: Unable to locate package x\n")); err == nil {
		t.Error("parsed a stanza from an apt-cache error")
	}
}

// fakeApt stands in for apt-cache and apt-get; downloads hand out the
// successive bodies in downloads.
type fakeApt struct {
	shows     map[string]string // "pkg:arch" -> apt-cache show output
	downloads [][]byte
	fetched   int
	asked     int // apt-cache calls
}

func (f *fakeApt) install(t *testing.T) {
	old := runApt
	runApt = func(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
		switch name {
		case "apt-cache":
			f.asked++
			out, ok := f.shows[args[len(args)-1]]
			if !ok {
				return nil, errors.New("exit status 100: E: No packages found")
			}
			return []byte(out), nil
		case "apt-get":
			if f.fetched >= len(f.downloads) {
				return nil, errors.New("no more downloads")
			}
			spec := args[len(args)-1]
			pkg, _, _ := strings.Cut(spec, ":")
			f.fetched++
			return nil, os.WriteFile(filepath.Join(dir, pkg+"_x_amd64.deb"), f.downloads[f.fetched-1], 0o600)
		}
		return nil, fmt.Errorf("unexpected command %s", name)
	}
	t.Cleanup(func() { runApt = old })
}

func TestAptKernelVerifiesAndRefetches(t *testing.T) {
	good := makeDeb(t, "xz", kernelEntries())
	sum := sha256.Sum256(good)
	sumHex := hex.EncodeToString(sum[:])
	partial := good[:len(good)/2]
	shows := map[string]string{
		"linux-image-cloud-amd64:amd64":          showMeta,
		"linux-image-6.1.0-99-cloud-amd64:amd64": showKernel(sumHex),
	}
	tests := []struct {
		name      string
		downloads [][]byte
		cached    []byte // a file already in <cache>/debs
		wantErr   string
		fetches   int
	}{
		{name: "first download good", downloads: [][]byte{good}, fetches: 1},
		{name: "partial then good", downloads: [][]byte{partial, good}, fetches: 2},
		{name: "corrupt cache file refetched", cached: partial, downloads: [][]byte{good}, fetches: 1},
		{name: "good cache file used", cached: good, fetches: 0},
		{name: "corrupt twice", downloads: [][]byte{partial, partial}, wantErr: "failed verification twice", fetches: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeApt{shows: shows, downloads: tt.downloads}
			f.install(t)
			cache := t.TempDir()
			p, _ := parseAptShow([]byte(showKernel(sumHex)))
			if tt.cached != nil {
				os.MkdirAll(filepath.Join(cache, debsDir), 0o755)
				os.WriteFile(filepath.Join(cache, debsDir, p.fileName()), tt.cached, 0o644)
			}
			k, deb, err := aptKernel(context.Background(), cache, "linux-image-cloud-amd64", "amd64", func(string) {})
			if f.fetched != tt.fetches {
				t.Errorf("%d downloads, want %d", f.fetched, tt.fetches)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, err := os.Stat(filepath.Join(cache, debsDir, p.fileName())); err == nil {
					t.Error("a corrupt package file was kept")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Release != testRel || filepath.Base(deb) != p.fileName() {
				t.Errorf("kernel %+v from %s", k, deb)
			}
			if ents, _ := filepath.Glob(filepath.Join(cache, debsDir, ".dl-*")); len(ents) != 0 {
				t.Errorf("download temp dirs left: %v", ents)
			}
		})
	}
}

func TestAptKernelUnknownPackage(t *testing.T) {
	(&fakeApt{shows: map[string]string{"linux-image-cloud-amd64:amd64": "Package: linux-image-cloud-amd64\nVersion: 1\nArchitecture: amd64\nDepends: kmod\n"}}).install(t)
	_, _, err := aptKernel(context.Background(), t.TempDir(), "linux-image-6.1.0-1-cloud-amd64", "amd64", func(string) {})
	if err == nil || !strings.Contains(err.Error(), "apt-get update") {
		t.Errorf("unknown package: %v, want an apt-get update hint", err)
	}
	_, _, err = aptKernel(context.Background(), t.TempDir(), "linux-image-cloud-amd64", "amd64", func(string) {})
	if err == nil || !strings.Contains(err.Error(), "depends on none") {
		t.Errorf("metapackage without kernel: %v", err)
	}
}

func TestRecipeKernelPackageKeys(t *testing.T) {
	tests := []struct {
		kernel  string
		wantErr string
	}{
		{`source = "debian"` + "\npackage = \"linux-image-6.1.0-56-cloud-amd64\"", ""},
		{`source = "debian"` + "\ndeb = \"/srv/k.deb\"", ""},
		{`source = "debian"` + "\npackage = \"linux-image-cloud-amd64\"\ndeb = \"/k.deb\"", "not both"},
		{`source = "debian"` + "\npackage = \"busybox\"", "linux-image-*"},
		{`source = "file"` + "\npath = \"/k\"\npackage = \"linux-image-cloud-amd64\"", "only used with"},
		{`source = "debian"` + "\ndeb = \"k.deb\"", "need a recipe file"},
	}
	for _, tt := range tests {
		_, err := ParseRecipe("t.toml", []byte("name = \"t\"\n[kernel]\n"+tt.kernel+"\n"), "")
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%q: err = %v, want %q", tt.kernel, err, tt.wantErr)
		}
	}
}

// TestFetchCloudKernelReal downloads the current cloud kernel package with
// apt-get, unpacks it and compares the result with the installed kernel of
// the same release when there is one. Boots nothing.
func TestFetchCloudKernelReal(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the kernel package (~30 MB); skipped with -short")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("needs apt-get")
	}
	da := hostDebArch()
	if da == "" {
		t.Skip("needs dpkg --print-architecture")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cache := os.Getenv("MVM_TEST_IMAGE_CACHE")
	if cache == "" {
		cache = t.TempDir()
	}
	start := time.Now()
	k, deb, err := aptKernel(ctx, cache, "linux-image-cloud-"+da, da, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(deb)
	t.Logf("kernel %s from %s (%d bytes) in %v", k.Release, filepath.Base(deb), fi.Size(), time.Since(start))
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
		t.Fatal(err)
	}
	mods, err := resolveModules(k.ModulesDir, guestModules, requiredModules)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) == 0 {
		t.Error("no guest modules resolved from the unpacked tree")
	}
	installed := filepath.Join("/boot", "vmlinuz-"+k.Release)
	if _, err := os.Stat(installed); err != nil {
		t.Logf("release %s is not installed; not comparing files", k.Release)
		return
	}
	for got, want := range map[string]string{
		k.Image: installed,
		filepath.Join(k.ModulesDir, "kernel/drivers/net/virtio_net.ko"): filepath.Join("/lib/modules", k.Release, "kernel/drivers/net/virtio_net.ko"),
	} {
		a, err1 := hashFile(got)
		b, err2 := hashFile(want)
		if err1 != nil || err2 != nil || a != b {
			t.Errorf("%s (%s, %v) differs from installed %s (%s, %v)", got, a, err1, want, b, err2)
		}
	}
	// The generated modules.dep resolves the same modules as depmod's.
	hostMods, err := resolveModules(filepath.Join("/lib/modules", k.Release), guestModules, requiredModules)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(moduleNames(mods)) != fmt.Sprint(moduleNames(hostMods)) {
		t.Errorf("modules from the package %v, from the installed tree %v", moduleNames(mods), moduleNames(hostMods))
	}
	// A second call uses the cached, verified package and tree.
	start = time.Now()
	k2, _, err := aptKernel(ctx, cache, "linux-image-cloud-"+da, da, func(string) {})
	if err != nil || k2.Image != k.Image {
		t.Fatalf("second fetch: %+v, %v", k2, err)
	}
	t.Logf("cached fetch %v", time.Since(start))
}

func moduleNames(ms []module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// TestAptKernelMemo checks that apt's answer and the .deb's verification are
// remembered in <cache>/debs for aptMemoTTL, re-asked after it, and re-asked
// at once when a remembered version can no longer be fetched.
func TestAptKernelMemo(t *testing.T) {
	good := makeDeb(t, "xz", kernelEntries())
	sum := sha256.Sum256(good)
	sumHex := hex.EncodeToString(sum[:])
	f := &fakeApt{shows: map[string]string{
		"linux-image-cloud-amd64:amd64":          showMeta,
		"linux-image-6.1.0-99-cloud-amd64:amd64": showKernel(sumHex),
	}, downloads: [][]byte{good}}
	f.install(t)
	now := time.Now()
	oldNow := aptNow
	aptNow = func() time.Time { return now }
	t.Cleanup(func() { aptNow = oldNow })
	cache := t.TempDir()
	get := func() string {
		t.Helper()
		k, deb, err := aptKernel(context.Background(), cache, "linux-image-cloud-amd64", "amd64", func(string) {})
		if err != nil {
			t.Fatal(err)
		}
		if k.Release != testRel {
			t.Fatalf("release %s", k.Release)
		}
		return deb
	}
	deb := get()
	if f.asked != 2 || f.fetched != 1 {
		t.Fatalf("first build: %d apt-cache calls, %d downloads; want 2, 1", f.asked, f.fetched)
	}
	m := loadAptMemo(filepath.Join(cache, debsDir))
	a := m.Packages["linux-image-cloud-amd64:amd64"]
	if a.Package != "linux-image-6.1.0-99-cloud-amd64" || a.Version != "1:6.1.192-2" || a.SHA256 != sumHex ||
		!strings.HasPrefix(a.Filename, "pool/") || !a.FetchedAt.Equal(now) {
		t.Errorf("memo answer %+v", a)
	}
	if c := m.Verified[filepath.Base(deb)]; c.SHA256 != sumHex || c.Size != int64(len(good)) {
		t.Errorf("memo verification %+v", c)
	}

	now = now.Add(aptMemoTTL - time.Second)
	if get() != deb || f.asked != 2 || f.fetched != 1 {
		t.Errorf("within the TTL: %d apt-cache calls, %d downloads; want 2, 1", f.asked, f.fetched)
	}

	// A changed file (other size) is hashed again, found corrupt, refetched.
	if err := os.WriteFile(deb, good[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	f.downloads = append(f.downloads, good)
	if get() != deb || f.fetched != 2 {
		t.Errorf("changed .deb not refetched: %d downloads", f.fetched)
	}

	now = now.Add(2 * time.Second)
	get()
	if f.asked != 4 {
		t.Errorf("after the TTL: %d apt-cache calls, want 4", f.asked)
	}

	// A remembered version apt no longer has: the download fails and apt
	// is asked again at once.
	m = loadAptMemo(filepath.Join(cache, debsDir))
	stale := m.Packages["linux-image-cloud-amd64:amd64"]
	stale.Version, stale.SHA256 = "6.1.1-1", strings.Repeat("0", 64)
	m.Packages["linux-image-cloud-amd64:amd64"] = stale
	m.save(filepath.Join(cache, debsDir))
	if get() != deb || f.asked != 6 {
		t.Errorf("stale memo: %d apt-cache calls, want 6", f.asked)
	}

	// An unreadable memo is ignored.
	if err := os.WriteFile(filepath.Join(cache, debsDir, aptMemoFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if get() != deb || f.asked != 8 {
		t.Errorf("corrupt memo: %d apt-cache calls, want 8", f.asked)
	}
}

package release

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/sign"
)

const changelog = `# Changelog

## [Unreleased]

## [0.2.0] - 2026-12-07

### Added
- things
`

func TestGuard(t *testing.T) {
	ok := Facts{Version: "v0.2.0", VersionFile: "0.2.0\n", Changelog: []byte(changelog), Tags: []string{"v0.2.0"}}
	tests := []struct {
		name string
		mod  func(*Facts)
		want []string // substrings of the error; none: accepted
	}{
		{"all agree", func(*Facts) {}, nil},
		{"untagged HEAD", func(f *Facts) { f.Tags = nil }, nil},
		{"version file with v", func(f *Facts) { f.VersionFile = "v0.2.0" }, nil},
		{"non-version tag ignored", func(f *Facts) { f.Tags = []string{"v0.2.0", "latest"} }, nil},
		{"bad version", func(f *Facts) { f.Version = "0.2.0" }, []string{"not vMAJOR"}},
		{"describe output", func(f *Facts) { f.Version = "v0.2.0-3-gabc123-dirty"; f.VersionFile = "0.2.0-3-gabc123-dirty" }, []string{"top entry is [0.2.0]"}},
		{"version file disagrees", func(f *Facts) { f.VersionFile = "0.1.9" }, []string{"VERSION file says \"0.1.9\""}},
		{"changelog disagrees", func(f *Facts) { f.Version, f.VersionFile, f.Tags = "v0.3.0", "0.3.0", nil }, []string{"top entry is [0.2.0]"}},
		{"tag disagrees", func(f *Facts) { f.Tags = []string{"v0.2.1"} }, []string{"HEAD is tagged v0.2.1"}},
		{"unreleased changes", func(f *Facts) {
			f.Changelog = []byte(strings.Replace(changelog, "## [Unreleased]\n", "## [Unreleased]\n- pending\n", 1))
		}, []string{"Unreleased section still lists changes"}},
		{"no released entry", func(f *Facts) { f.Changelog = []byte("# Changelog\n\n## [Unreleased]\n") }, []string{"no released entry"}},
		{"dirty tree", func(f *Facts) { f.Dirty = []string{"main.go"} }, []string{"uncommitted changes (main.go)"}},
		{"everything wrong at once", func(f *Facts) { f.VersionFile, f.Tags = "1.0.0", []string{"v9.9.9"} },
			[]string{"VERSION file", "HEAD is tagged v9.9.9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ok
			tt.mod(&f)
			err := Guard(f)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestRepoGuard: the repository's own VERSION and CHANGELOG.md parse, and a
// release whose number neither names is refused.
func TestRepoGuard(t *testing.T) {
	root := moduleRoot(t)
	f, err := RepoFacts(context.Background(), root, "v999.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Guard(f); err == nil || !strings.Contains(err.Error(), "VERSION file") {
		t.Fatalf("Guard(v999.0.0) = %v, want a VERSION file mismatch", err)
	}
}

// TestReproducible builds a subset of the release twice and wants the same
// bytes: mvmctl for Linux and (cross-compiled) macOS and the agent, the
// second time into another path under another SOURCE_DATE_EPOCH; then the
// agent once more from an empty build cache, so compiled packages are
// checked too and not only the link. Then it signs the sums with a
// throwaway key and checks the signature and a tampered artifact. make
// release builds the full set; the subset and the one cold build keep CI's
// time near a minute and a half on 2 cores (every target from an empty
// cache takes over 4).
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mvmctl twice for two platforms and the agent from an empty cache (1-2 minutes)")
	}
	root := moduleRoot(t)
	ctx := context.Background()
	key, err := sign.GenerateKey("release-test")
	if err != nil {
		t.Fatal(err)
	}
	pin, err := key.Public().MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	build := func(targets, out, cache, epoch string) []Artifact {
		ts, err := ParseTargets(targets)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		arts, err := Build(ctx, Options{Root: root, Out: out, Version: "v0.0.0-test", Targets: ts,
			PinnedKey: string(pin), GoCache: cache, Env: []string{"SOURCE_DATE_EPOCH=" + epoch}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("built %s into %s in %v", targets, out, time.Since(t0).Round(time.Second))
		return arts
	}
	const subset = "mvmctl-linux-amd64,mvmctl-darwin-arm64,mvm-agent-linux-amd64"
	a := build(subset, filepath.Join(t.TempDir(), "a"), "", "0")
	b := build(subset, filepath.Join(t.TempDir(), "elsewhere", "b"), "", "1900000000")
	for i := range a {
		if a[i].Name != b[i].Name || a[i].SHA256 != b[i].SHA256 {
			t.Errorf("%s differs between builds: %s vs %s %s", a[i].Name, a[i].SHA256, b[i].Name, b[i].SHA256)
		}
	}
	if !bytes.Equal(Sums(a), Sums(b)) {
		t.Fatalf("SHA256SUMS differ:\n%s\n%s", Sums(a), Sums(b))
	}
	// The release build links its key in: the binary reports the key
	// update will require.
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		out, err := exec.Command(a[0].Path, "version", "--json").Output()
		if err != nil {
			t.Fatalf("%s version: %v", a[0].Name, err)
		}
		var v struct {
			Version    string `json:"version"`
			ReleaseKey string `json:"release_key"`
		}
		if err := json.Unmarshal(out, &v); err != nil || v.Version != "v0.0.0-test" || v.ReleaseKey != key.Public().ID {
			t.Fatalf("%s version --json = %s (%v): want v0.0.0-test and release key %s", a[0].Name, out, err, key.Public().ID)
		}
	}
	t0 := time.Now()
	agent, _ := ParseTargets("mvm-agent-linux-amd64")
	err = CheckReproducible(ctx, Options{Root: root, Version: "v0.0.0-test", Targets: agent,
		Env: []string{"SOURCE_DATE_EPOCH=1"}}, a[2:3])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rebuilt mvm-agent-linux-amd64 from an empty cache in %v", time.Since(t0).Round(time.Second))

	dir := filepath.Dir(a[0].Path)
	sums := Sums(a)
	sig, err := sign.SignRelease(key, sums)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "SHA256SUMS"), sums)
	writeFile(t, filepath.Join(dir, "SHA256SUMS.sig"), sig)
	trusted := sign.NewKeySet(key.Public())
	if id, err := Verify(dir, trusted); err != nil || id != key.Public().ID {
		t.Fatalf("Verify = %q, %v", id, err)
	}
	other, _ := sign.GenerateKey("other")
	if _, err := Verify(dir, sign.NewKeySet(other.Public())); err == nil {
		t.Error("verified with a key that did not sign")
	}
	// One flipped byte in an artifact: the signature still holds, the sums do not.
	f, err := os.OpenFile(a[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Verify(dir, trusted); err == nil || !strings.Contains(err.Error(), a[0].Name) {
		t.Errorf("tampered %s: Verify = %v", a[0].Name, err)
	}
}

func TestCompareArtifacts(t *testing.T) {
	x := Artifact{Name: "mvmctl-linux-amd64", SHA256: strings.Repeat("0", 64)}
	y := Artifact{Name: "mvmctl-linux-amd64", SHA256: strings.Repeat("1", 64)}
	tests := []struct {
		name      string
		want, got []Artifact
		err       string
	}{
		{"same", []Artifact{x}, []Artifact{x}, ""},
		{"differs", []Artifact{x}, []Artifact{y}, "not reproducible"},
		{"count", []Artifact{x}, nil, "built 0 artifacts, want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := compareArtifacts(tt.want, tt.got)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestSums(t *testing.T) {
	got := string(Sums([]Artifact{{Name: "b", SHA256: strings.Repeat("1", 64)}, {Name: "a", SHA256: strings.Repeat("0", 64)}}))
	want := strings.Repeat("0", 64) + "  a\n" + strings.Repeat("1", 64) + "  b\n"
	if got != want {
		t.Fatalf("Sums:\n%s\nwant\n%s", got, want)
	}
}

func TestParseTargets(t *testing.T) {
	all, err := ParseTargets("all")
	if err != nil || len(all) != 10 {
		t.Fatalf("all: %d targets, %v", len(all), err)
	}
	if _, err := ParseTargets("mvm-agent-darwin-arm64"); err == nil {
		t.Error("an agent for macOS is not a release target")
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return root
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLDFlags(t *testing.T) {
	key, err := sign.GenerateKey("rel")
	if err != nil {
		t.Fatal(err)
	}
	pin, _ := key.Public().MarshalText()
	for _, c := range []struct {
		name, version, pin string
		want               string // substring; "" wants an error
	}{
		{"version only", "v1.2.3", "", "cli.Version=v1.2.3"},
		{"key quoted", "v1.2.3", string(pin) + "\n", "-X 'github.com/mvm-dev/mvm/internal/cli.PinnedReleaseKey=" + strings.TrimSpace(string(pin)) + "'"},
		{"version with a space", "v1 -X x=y", "", ""},
		{"version with a quote", "v1'", "", ""},
		{"not a key", "v1.2.3", "mvm-ed25519-pub nope", ""},
		{"key with a quote", "v1.2.3", string(pin) + "' -X a=b", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := LDFlags(c.version, c.pin)
			if c.want == "" {
				if err == nil {
					t.Fatalf("LDFlags(%q, %q) = %q, want an error", c.version, c.pin, got)
				}
				return
			}
			if err != nil || !strings.Contains(got, c.want) {
				t.Fatalf("LDFlags = %q, %v; want it to contain %q", got, err, c.want)
			}
		})
	}
}

// Package release builds mvm's release artifacts reproducibly, writes their
// SHA256SUMS, signs it, and guards a release against version mismatches.
//
// Reproducible means the same commit and toolchain give the same bytes on
// any machine, at any time, from any checkout path: builds run with
// -trimpath, -buildvcs=false, an empty build ID, CGO_ENABLED=0, a fixed
// GOAMD64/GOARM64 level and none of the caller's GOFLAGS, and the Go
// toolchain is the one go.mod names. Nothing reads the clock, so
// SOURCE_DATE_EPOCH changes nothing.
package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mvm-dev/mvm/internal/sign"
)

// Target is one binary for one platform.
type Target struct {
	Cmd    string // directory name under cmd/
	GOOS   string
	GOARCH string
}

// Name is the artifact's file name in dist/: mvmctl-linux-amd64.
func (t Target) Name() string { return t.Cmd + "-" + t.GOOS + "-" + t.GOARCH }

// Targets is everything a release ships: mvmctl for Linux and macOS on
// amd64 and arm64; the guest agent, the supervisor and the containerd
// shim only for Linux,
// where guests and the QEMU backend's supervisor run.
func Targets() []Target {
	var ts []Target
	for _, os := range []string{"linux", "darwin"} {
		for _, arch := range []string{"amd64", "arm64"} {
			ts = append(ts, Target{"mvmctl", os, arch})
		}
	}
	for _, cmd := range []string{"mvm-agent", "mvm-supervisor", "containerd-shim-mvm-v1"} {
		for _, arch := range []string{"amd64", "arm64"} {
			ts = append(ts, Target{cmd, "linux", arch})
		}
	}
	return ts
}

// ParseTargets reads "all" or a comma-separated list of names
// (mvmctl-linux-amd64,mvmctl-darwin-arm64).
func ParseTargets(s string) ([]Target, error) {
	if s == "" || s == "all" {
		return Targets(), nil
	}
	var out []Target
	for _, name := range strings.Split(s, ",") {
		i := slices.IndexFunc(Targets(), func(t Target) bool { return t.Name() == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown target %q (want one of: %s)", name, targetNames(Targets()))
		}
		out = append(out, Targets()[i])
	}
	return out, nil
}

func targetNames(ts []Target) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name())
	}
	return strings.Join(names, ", ")
}

// versionRE is a release version: v, three numbers, an optional
// pre-release (v1.2.3, v1.2.3-rc.1).
var versionRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// CheckVersion accepts what a release may be called.
func CheckVersion(v string) error {
	if !versionRE.MatchString(v) {
		return fmt.Errorf("version %q is not vMAJOR.MINOR.PATCH[-PRERELEASE] (e.g. v0.1.0)", v)
	}
	return nil
}

// Options say what Build makes and where.
type Options struct {
	Root    string // the module's root
	Out     string // output directory; made if missing
	Version string // linked into mvmctl (internal/cli.Version)
	// PinnedKey is the release public key as one line ('mvmctl key
	// export'), linked into mvmctl (internal/cli.PinnedReleaseKey): the key
	// its update command requires. "" links none (snapshot builds).
	PinnedKey string
	Targets   []Target // nil: Targets()
	Go        string   // go command; "" finds "go"
	// GoCache, when set, is the build cache to use (a fresh one proves the
	// bytes do not come from an old cache entry).
	GoCache string
	Env     []string // extra environment, last (tests: SOURCE_DATE_EPOCH)
	Log     *slog.Logger
}

// Artifact is one built file.
type Artifact struct {
	Name   string
	Path   string
	SHA256 string // hex
}

// LDFlags are the linker flags of every release binary. The key line has
// spaces, so its -X is quoted (go build splits -ldflags shell-style).
func LDFlags(version, pinnedKey string) (string, error) {
	if strings.ContainsAny(version, " '\"\\") {
		return "", fmt.Errorf("version %q: no spaces or quotes", version)
	}
	f := "-s -w -buildid= -X github.com/mvm-dev/mvm/internal/cli.Version=" + version
	if pinnedKey != "" {
		pinnedKey = strings.TrimSpace(pinnedKey)
		if _, err := sign.ParsePublicKey([]byte(pinnedKey)); err != nil {
			return "", fmt.Errorf("pinned release key: %w", err)
		}
		f += " -X 'github.com/mvm-dev/mvm/internal/cli.PinnedReleaseKey=" + pinnedKey + "'"
	}
	return f, nil
}

// Build builds each target into o.Out and returns the artifacts in target
// order.
func Build(ctx context.Context, o Options) ([]Artifact, error) {
	if o.Targets == nil {
		o.Targets = Targets()
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Version == "" {
		return nil, fmt.Errorf("release build: no version")
	}
	toolchain, err := goToolchain(o.Root)
	if err != nil {
		return nil, err
	}
	ldflags, err := LDFlags(o.Version, o.PinnedKey)
	if err != nil {
		return nil, fmt.Errorf("release build: %w", err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("release build: %w", err)
	}
	var arts []Artifact
	for _, t := range o.Targets {
		out, err := filepath.Abs(filepath.Join(o.Out, t.Name()))
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-buildvcs=false",
			"-ldflags", ldflags, "-o", out, "./cmd/"+t.Cmd)
		cmd.Dir = o.Root
		cmd.Env = buildEnv(os.Environ(), t, toolchain, o.GoCache, o.Env)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		o.Log.Info("build", "target", t.Name(), "toolchain", toolchain)
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("build %s: %w\n%s", t.Name(), err, strings.TrimSpace(stderr.String()))
		}
		sum, err := fileSHA256(out)
		if err != nil {
			return nil, err
		}
		arts = append(arts, Artifact{Name: t.Name(), Path: out, SHA256: sum})
	}
	return arts, nil
}

// buildEnv is the caller's environment without anything that changes what
// the compiler emits, then the fixed settings of a release build.
func buildEnv(base []string, t Target, toolchain, cache string, extra []string) []string {
	drop := map[string]bool{
		"GOOS": true, "GOARCH": true, "CGO_ENABLED": true, "GOFLAGS": true,
		"GOAMD64": true, "GOARM64": true, "GOEXPERIMENT": true, "GOTOOLCHAIN": true,
		"GO386": true, "GOARM": true, "GOWORK": true,
	}
	if cache != "" {
		drop["GOCACHE"] = true
	}
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	env = append(env, "GOOS="+t.GOOS, "GOARCH="+t.GOARCH, "CGO_ENABLED=0",
		"GOAMD64=v1", "GOARM64=v8.0", "GOWORK=off", "GOFLAGS=-mod=readonly",
		// The toolchain go.mod names, not whatever is newest here: another
		// compiler version emits other bytes.
		"GOTOOLCHAIN="+toolchain)
	if cache != "" {
		env = append(env, "GOCACHE="+cache)
	}
	return append(env, extra...)
}

// goToolchain is go.mod's toolchain line, else its go line, as a
// GOTOOLCHAIN value (go1.26.8).
func goToolchain(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("release build: %w", err)
	}
	var goLine string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "toolchain" {
			return f[1], nil
		}
		if len(f) == 2 && f[0] == "go" {
			goLine = "go" + f[1]
		}
	}
	if goLine == "" {
		return "", fmt.Errorf("release build: go.mod has no go line")
	}
	return goLine, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Sums renders a SHA256SUMS file (sha256sum's format, sorted by name), so
// `sha256sum -c SHA256SUMS` checks a download.
func Sums(arts []Artifact) []byte {
	arts = slices.Clone(arts)
	slices.SortFunc(arts, func(a, b Artifact) int { return strings.Compare(a.Name, b.Name) })
	var b bytes.Buffer
	for _, a := range arts {
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256, a.Name)
	}
	return b.Bytes()
}

// CheckSums verifies every file SHA256SUMS in dir names against its line.
func CheckSums(dir string, sums []byte) error {
	lines := strings.Split(strings.TrimSuffix(string(sums), "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return fmt.Errorf("SHA256SUMS is empty")
	}
	for _, line := range lines {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 || name == "" || strings.ContainsAny(name, "/\\") {
			return fmt.Errorf("SHA256SUMS: malformed line %q", line)
		}
		got, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("SHA256SUMS: %w", err)
		}
		if got != sum {
			return fmt.Errorf("SHA256SUMS: %s has sha256 %s, the file says %s", name, got, sum)
		}
	}
	return nil
}

// Verify checks dir/SHA256SUMS.sig over dir/SHA256SUMS with the trusted
// keys, then every file the sums name; it returns the signing key's ID.
func Verify(dir string, trusted sign.KeySet) (string, error) {
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return "", fmt.Errorf("verify release: %w", err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS.sig"))
	if err != nil {
		return "", fmt.Errorf("verify release: %w", err)
	}
	id, err := sign.VerifyRelease(sig, sums, trusted)
	if err != nil {
		return "", err
	}
	return id, CheckSums(dir, sums)
}

// CheckReproducible builds o's targets again into a temp dir from an empty
// build cache, so no compiled package is reused, and fails naming every
// artifact whose bytes differ from want's (same targets, same order).
func CheckReproducible(ctx context.Context, o Options, want []Artifact) error {
	tmp, err := os.MkdirTemp("", "mvm-release-repro-")
	if err != nil {
		return fmt.Errorf("reproducibility check: %w", err)
	}
	defer os.RemoveAll(tmp)
	o.Out, o.GoCache = filepath.Join(tmp, "out"), filepath.Join(tmp, "cache")
	got, err := Build(ctx, o)
	if err != nil {
		return fmt.Errorf("reproducibility check: %w", err)
	}
	return compareArtifacts(want, got)
}

// compareArtifacts fails naming every artifact of got whose bytes differ
// from want's.
func compareArtifacts(want, got []Artifact) error {
	if len(got) != len(want) {
		return fmt.Errorf("reproducibility check: built %d artifacts, want %d", len(got), len(want))
	}
	var bad []string
	for i := range got {
		if got[i].Name != want[i].Name || got[i].SHA256 != want[i].SHA256 {
			bad = append(bad, fmt.Sprintf("%s: %s, rebuilt %s", want[i].Name, want[i].SHA256, got[i].SHA256))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("not reproducible: a rebuild from an empty cache differs:\n%s", strings.Join(bad, "\n"))
	}
	return nil
}

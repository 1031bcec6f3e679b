// Package update replaces the installed mvm binaries with a signed release:
// it reads the release index, checks the release's SHA256SUMS against a
// pinned Ed25519 key and every binary against SHA256SUMS, and swaps each
// binary in atomically, keeping the one it replaced for Rollback.
//
// A release at URL is laid out as `make release` writes dist/:
//
//	URL/LATEST                      one line: the newest version (v1.2.3)
//	URL/v1.2.3/SHA256SUMS           sha256sum format, one line per file
//	URL/v1.2.3/SHA256SUMS.sig       sign.SignRelease over SHA256SUMS
//	URL/v1.2.3/mvmctl-linux-amd64   and the other binaries
package update

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/sign"
)

// Binaries are the programs an installation holds, updated together.
var Binaries = []string{"mvmctl", "mvm-agent", "mvm-supervisor", "containerd-shim-mvm-v1"}

// PrevSuffix marks the binary an update replaced, kept for Rollback.
const PrevSuffix = ".prev"

// Limits on what a release server may send.
const (
	maxIndex  = 256
	maxSums   = 64 << 10
	maxSig    = 4 << 10
	maxBinary = 512 << 20
)

// Options say where releases are and what is installed.
type Options struct {
	// URL is the release root (https, or http to a loopback host).
	URL string
	// Trusted are the keys a release's SHA256SUMS must be signed by.
	Trusted sign.KeySet
	// Dir holds the installed binaries.
	Dir string
	// GOOS and GOARCH pick the binaries (the running platform if empty).
	GOOS, GOARCH string
	// Client fetches; nil: one with timeouts on every phase.
	Client *http.Client
}

// Release is what Check found.
type Release struct {
	Version string `json:"version"`
	// Files maps each installed binary to its release file name.
	Files map[string]string `json:"files"`
	// Signer is the ID of the key SHA256SUMS is signed by.
	Signer string `json:"signer"`
	sums   map[string]string
}

// versionRE is a release version: v, three numbers, an optional
// pre-release.
var versionRE = regexp.MustCompile(`^v(\d{1,6})\.(\d{1,6})\.(\d{1,6})(-[0-9A-Za-z.-]{1,40})?$`)

// ParseIndex reads LATEST: exactly one version and a newline.
func ParseIndex(b []byte) (string, error) {
	v, ok := strings.CutSuffix(string(b), "\n")
	if !ok || !versionRE.MatchString(v) {
		return "", fmt.Errorf("release index: want one line naming a version like v1.2.3, got %q", clip(b))
	}
	return v, nil
}

// Compare orders versions like semver (a pre-release before its release);
// ok is false when either is not a release version (a development build).
func Compare(a, b string) (c int, ok bool) {
	ma, mb := versionRE.FindStringSubmatch(a), versionRE.FindStringSubmatch(b)
	if ma == nil || mb == nil {
		return 0, false
	}
	for i := 1; i <= 3; i++ {
		x, _ := strconv.Atoi(ma[i])
		y, _ := strconv.Atoi(mb[i])
		if x != y {
			if x < y {
				return -1, true
			}
			return 1, true
		}
	}
	switch pa, pb := ma[4], mb[4]; {
	case pa == pb:
		return 0, true
	case pa == "":
		return 1, true
	case pb == "":
		return -1, true
	case pa < pb:
		return -1, true
	}
	return 1, true
}

// ParseSums reads a SHA256SUMS file: "<64 lowercase hex>  <name>" per line
// (sha256sum's text or binary mode), names plain file names, each once.
func ParseSums(b []byte) (map[string]string, error) {
	if len(b) > maxSums {
		return nil, fmt.Errorf("SHA256SUMS: %d bytes, more than %d", len(b), maxSums)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		sum, name, ok := strings.Cut(line, " ")
		if !ok || len(sum) != 64 || strings.ToLower(sum) != sum {
			return nil, fmt.Errorf("SHA256SUMS line %d: want a sha256 and a file name", n)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, fmt.Errorf("SHA256SUMS line %d: %q is not hex", n, sum)
		}
		if name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*"); name == "" || name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsAny(name, "\\\x00") {
			return nil, fmt.Errorf("SHA256SUMS line %d: %q is not a plain file name", n, clip([]byte(name)))
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("SHA256SUMS: %s listed twice", name)
		}
		out[name] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("SHA256SUMS: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("SHA256SUMS lists no files")
	}
	return out, nil
}

func (o *Options) defaults() error {
	if o.GOOS == "" {
		o.GOOS = runtimeGOOS
	}
	if o.GOARCH == "" {
		o.GOARCH = runtimeGOARCH
	}
	if o.Client == nil {
		o.Client = &http.Client{
			Timeout: 10 * time.Minute,
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout:   30 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second,
			},
		}
	}
	if len(o.Trusted) == 0 {
		return errors.New("no release key to check updates against: this build pins none; set [update] key in config.toml to the publisher's .pub file")
	}
	u, err := url.Parse(o.URL)
	if err != nil || o.URL == "" {
		return fmt.Errorf("release URL %q: set [update] url in config.toml or pass --url", o.URL)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return fmt.Errorf("release URL %s: https is required (plain http only to a loopback host)", o.URL)
	}
	return nil
}

// Check reads the newest release and verifies its checksums' signature;
// nothing is downloaded beyond the index, SHA256SUMS and its signature.
func Check(ctx context.Context, o Options) (*Release, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	idx, err := fetchSmall(ctx, o.Client, o.URL+"/LATEST", maxIndex)
	if err != nil {
		return nil, err
	}
	v, err := ParseIndex(idx)
	if err != nil {
		return nil, err
	}
	base := o.URL + "/" + v
	sums, err := fetchSmall(ctx, o.Client, base+"/SHA256SUMS", maxSums)
	if err != nil {
		return nil, err
	}
	sig, err := fetchSmall(ctx, o.Client, base+"/SHA256SUMS.sig", maxSig)
	if err != nil {
		return nil, err
	}
	signer, err := sign.VerifyRelease(sig, sums, o.Trusted)
	if err != nil {
		return nil, fmt.Errorf("release %s refused: %w", v, err)
	}
	m, err := ParseSums(sums)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", v, err)
	}
	r := &Release{Version: v, Files: map[string]string{}, Signer: signer, sums: m}
	for _, b := range installed(o.Dir) {
		name := b + "-" + o.GOOS + "-" + o.GOARCH
		if b != "mvmctl" {
			name = b + "-linux-" + o.GOARCH // guest-side helpers are Linux programs
		}
		if _, ok := m[name]; !ok {
			return nil, fmt.Errorf("release %s has no %s for this installation", v, name)
		}
		r.Files[b] = name
	}
	if _, ok := r.Files["mvmctl"]; !ok {
		return nil, fmt.Errorf("no mvmctl in %s to update", o.Dir)
	}
	return r, nil
}

// installed lists which of Binaries are in dir.
func installed(dir string) []string {
	var out []string
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err == nil && fi.Mode().IsRegular() {
			out = append(out, b)
		}
	}
	return out
}

// Apply downloads r's binaries, checks each against SHA256SUMS, and swaps
// them in: each old binary is kept as NAME.prev, then the new one renamed
// over it. A failure before the swaps changes nothing; one during them
// puts back what was swapped.
func Apply(ctx context.Context, o Options, r *Release) error {
	if err := o.defaults(); err != nil {
		return err
	}
	staged := map[string]string{}
	defer func() {
		for _, p := range staged {
			os.Remove(p)
		}
	}()
	for b, name := range r.Files {
		p, err := download(ctx, o.Client, o.URL+"/"+r.Version+"/"+name, o.Dir, b, r.sums[name])
		if err != nil {
			return fmt.Errorf("update %s: %w", b, err)
		}
		staged[b] = p
	}
	var swapped []string
	for _, b := range Binaries {
		p, ok := staged[b]
		if !ok {
			continue
		}
		if err := swapIn(o.Dir, b, p); err != nil {
			for _, s := range swapped {
				_ = restore(o.Dir, s)
			}
			return fmt.Errorf("update %s: %w (the previous binaries are back)", b, err)
		}
		delete(staged, b)
		swapped = append(swapped, b)
	}
	return nil
}

// swapIn keeps dir/b as dir/b.prev and renames staged over dir/b.
func swapIn(dir, b, staged string) error {
	cur, prev := filepath.Join(dir, b), filepath.Join(dir, b+PrevSuffix)
	if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(cur, prev); err != nil {
		if err := copyFile(cur, prev); err != nil {
			return fmt.Errorf("keep the old binary: %w", err)
		}
	}
	return os.Rename(staged, cur)
}

// restore puts dir/b.prev back as dir/b.
func restore(dir, b string) error {
	return os.Rename(filepath.Join(dir, b+PrevSuffix), filepath.Join(dir, b))
}

// Rollback puts back the binaries the last update replaced and returns
// their names; with none kept it is an error.
func Rollback(dir string) ([]string, error) {
	var done []string
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b+PrevSuffix)); err != nil {
			continue
		}
		if err := restore(dir, b); err != nil {
			return done, fmt.Errorf("roll back %s: %w", b, err)
		}
		done = append(done, b)
	}
	if len(done) == 0 {
		return nil, fmt.Errorf("nothing to roll back in %s: no %s files (an update keeps the binaries it replaces until the next one)", dir, PrevSuffix)
	}
	return done, nil
}

func fetch(ctx context.Context, c *http.Client, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetch %s: %s", u, resp.Status)
	}
	return resp, nil
}

func fetchSmall(ctx context.Context, c *http.Client, u string, limit int64) ([]byte, error) {
	resp, err := fetch(ctx, c, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("fetch %s: more than %d bytes", u, limit)
	}
	return b, nil
}

// download fetches u into a temp file in dir, hashing it on the way, and
// returns its path once its SHA-256 is want; else it is removed.
func download(ctx context.Context, c *http.Client, u, dir, b, want string) (string, error) {
	resp, err := fetch(ctx, c, u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	f, err := os.CreateTemp(dir, "."+b+".new-*")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, maxBinary+1))
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", u, err)
	}
	if n > maxBinary {
		return "", fmt.Errorf("fetch %s: more than %d bytes", u, maxBinary)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("%s has sha256 %s, SHA256SUMS says %s: refused (tampered or truncated download)", u, got, want)
	}
	if err := f.Chmod(0o755); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	return f.Name(), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// bootstrapDir holds Debian base tarballs under the images cache.
const bootstrapDir = "bootstrap"

// bootstrapTimeout bounds one mmdebstrap run; a cold bootstrap of a few
// hundred packages takes a minute or two.
const bootstrapTimeout = 30 * time.Minute

// bootstrapKey identifies a base tarball: a second recipe with the same
// suite, packages and architecture reuses it.
type bootstrapKey struct {
	Suite    string   `json:"suite"`
	Packages []string `json:"packages"` // sorted
	Arch     string   `json:"arch"`     // Debian name
}

func (k bootstrapKey) hex() string {
	h := sha256.New()
	fmt.Fprintf(h, "mvm-bootstrap/2\nvariant=minbase\nsuite=%s\narch=%s\npackages=%s\n",
		k.Suite, k.Arch, strings.Join(k.Packages, ","))
	return hex.EncodeToString(h.Sum(nil))
}

// bootstrapTarball is a cached Debian base; its sidecar JSON records the
// hash taken when it was made.
type bootstrapTarball struct {
	bootstrapKey
	Path    string    `json:"-"`
	SHA256  string    `json:"sha256"`
	Mirrors []string  `json:"mirrors"`
	Created time.Time `json:"created"`
}

// dpkg excludes: documentation, manual pages and translations are most of a
// minbase system's files and nothing in a microVM reads them. Copyright
// files stay for licence compliance.
var dpkgExcludes = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

// bootstrapHook runs in the finished chroot ($1) before mmdebstrap packs
// it. mmdebstrap copies the build host's /etc/resolv.conf and /etc/hostname
// into the chroot so maintainer scripts can resolve names, and leaves both in
// the tarball: the host's name servers and name would make the base differ
// from host to host (and leak them into every guest). The hostname is the
// minimal image's placeholder; the agent sets the VM's name at boot. Nothing
// configures DNS in a guest yet, so no resolv.conf is better than the
// builder's. SOURCE_DATE_EPOCH makes mmdebstrap itself clamp mtimes and drop
// machine-id, ldconfig's aux-cache and the apt/dpkg logs.
// The hook refuses to run unless $1 is a directory other than /, so a
// quoting mistake can never reach the build host's own files.
const bootstrapHook = `set -e
case "$1" in ""|/) echo "mvm bootstrap hook: bad chroot path '$1'" >&2; exit 1;; esac
test -d "$1/etc"
rm -f "$1/etc/resolv.conf" "$1/etc/hostname"
printf 'mvm\n' >"$1/etc/hostname"
chmod 0644 "$1/etc/hostname"`

// ensureBootstrap returns the cached base tarball for k, running mmdebstrap
// once when it is missing.
func ensureBootstrap(ctx context.Context, dir string, k bootstrapKey) (*bootstrapTarball, error) {
	k.Packages = slices.Clone(k.Packages)
	slices.Sort(k.Packages)
	key := k.hex()
	tarPath := filepath.Join(dir, key+".tar")
	metaPath := filepath.Join(dir, key+".json")
	if t, err := loadBootstrap(tarPath, metaPath); err == nil {
		return t, nil
	}
	mm, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return nil, errors.New("mmdebstrap not found: install package mmdebstrap (Debian rootfs source)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bootstrap cache: %w", err)
	}
	lock := flock.New(filepath.Join(dir, key+".lock"))
	locked, err := lock.TryLockContext(ctx, 200*time.Millisecond)
	if err != nil || !locked {
		return nil, fmt.Errorf("lock bootstrap cache: %w", errors.Join(err, ctx.Err()))
	}
	defer lock.Unlock()
	if t, err := loadBootstrap(tarPath, metaPath); err == nil {
		return t, nil
	}

	mirrors := mirrorLines(hostAptSources(), k.Suite)
	tmp := filepath.Join(dir, ".tmp-"+key+".tar")
	os.Remove(tmp)
	defer os.Remove(tmp)
	argv := []string{mm, "--variant=minbase", "--mode=auto", "--format=tar",
		"--architectures=" + k.Arch,
		`--aptopt=Acquire::Languages "none"`,
		`--aptopt=APT::Install-Recommends "false"`,
		"--customize-hook=" + bootstrapHook,
	}
	if len(k.Packages) > 0 {
		argv = append(argv, "--include="+strings.Join(k.Packages, ","))
	}
	for _, x := range dpkgExcludes {
		argv = append(argv, "--dpkgopt="+x)
	}
	argv = append(argv, k.Suite, tmp)
	argv = append(argv, mirrors...)

	slog.Info("bootstrapping Debian base", "suite", k.Suite, "packages", k.Packages, "mirrors", mirrors)
	bctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	start := time.Now()
	env := append(os.Environ(), "LC_ALL=C", "TZ=UTC",
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(fixedTime.Unix(), 10))
	if err := run(bctx, env, argv...); err != nil {
		return nil, fmt.Errorf("bootstrap %s (%s): %w", k.Suite, strings.Join(k.Packages, " "), err)
	}
	sum, err := hashFile(tmp)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	t := &bootstrapTarball{bootstrapKey: k, Path: tarPath, SHA256: sum, Mirrors: mirrors, Created: time.Now().UTC()}
	if err := sealFile(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	mb, _ := json.MarshalIndent(t, "", "  ")
	if err := writeFileAtomic(metaPath, append(mb, '\n')); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	slog.Debug("bootstrap done", "suite", k.Suite, "took", time.Since(start))
	return t, nil
}

// loadBootstrap returns a complete cached tarball: sidecar present and
// matching the tarball's size class (a full re-hash costs seconds; the
// tarball is read-only and written before its sidecar).
func loadBootstrap(tarPath, metaPath string) (*bootstrapTarball, error) {
	b, err := os.ReadFile(metaPath)
	if err != nil {
		return nil, err
	}
	var t bootstrapTarball
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("bootstrap sidecar %s: %w", metaPath, err)
	}
	if fi, err := os.Stat(tarPath); err != nil || !fi.Mode().IsRegular() || len(t.SHA256) != 64 {
		return nil, fmt.Errorf("bootstrap tarball %s incomplete", tarPath)
	}
	t.Path = tarPath
	return &t, nil
}

// writeFileAtomic writes data to p via a temporary file and rename.
func writeFileAtomic(p string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

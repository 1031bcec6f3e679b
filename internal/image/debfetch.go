package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// debsDir holds downloaded kernel packages, named as apt names them.
const debsDir = "debs"

// aptTimeout bounds one apt-cache query; aptDownloadTimeout one download.
const (
	aptTimeout         = 2 * time.Minute
	aptDownloadTimeout = 15 * time.Minute
)

// versionedKernelRE matches real kernel packages; metapackages such as
// linux-image-cloud-amd64 only depend on one.
var versionedKernelRE = lazyRE(`^linux-image-[0-9]`)

// runApt runs an apt tool in dir and returns its stdout; a variable so tests
// can stand in for apt.
var runApt = func(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// debPackage is the candidate version of a package as apt-cache shows it.
type debPackage struct {
	Name, Version, Arch, Filename, SHA256 string
	Depends                               []string // package names, alternatives flattened
}

// fileName is the name apt-get download gives the package file.
func (p *debPackage) fileName() string {
	return fmt.Sprintf("%s_%s_%s.deb", p.Name, strings.ReplaceAll(p.Version, ":", "%3a"), p.Arch)
}

// parseAptShow reads the first stanza of `apt-cache show` output.
func parseAptShow(out []byte) (*debPackage, error) {
	p := &debPackage{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if p.Name != "" {
				break
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field (Description)
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			p.Name = v
		case "Version":
			p.Version = v
		case "Architecture":
			p.Arch = v
		case "Filename":
			p.Filename = v
		case "SHA256":
			p.SHA256 = strings.ToLower(v)
		case "Depends", "Pre-Depends":
			for _, dep := range strings.Split(v, ",") {
				for _, alt := range strings.Split(dep, "|") {
					if f := strings.Fields(alt); len(f) > 0 {
						p.Depends = append(p.Depends, strings.SplitN(f[0], ":", 2)[0])
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if p.Name == "" || p.Version == "" || p.Arch == "" {
		return nil, errors.New("apt-cache show: no Package/Version/Architecture")
	}
	return p, nil
}

// aptShow asks apt for the candidate version of pkg for debarch.
func aptShow(ctx context.Context, pkg, debarch string) (*debPackage, error) {
	ctx, cancel := context.WithTimeout(ctx, aptTimeout)
	defer cancel()
	out, err := runApt(ctx, "", "apt-cache", "show", "--no-all-versions", pkg+":"+debarch)
	if err == nil && len(bytes.TrimSpace(out)) == 0 {
		err = errors.New("apt-cache show printed nothing")
	}
	if err != nil {
		hint := "run `apt-get update`"
		if debarch != hostDebArch() {
			hint += fmt.Sprintf(" after `dpkg --add-architecture %s`", debarch)
		}
		return nil, fmt.Errorf("apt knows no package %s for %s (%s): %w", pkg, debarch, hint, err)
	}
	p, err := parseAptShow(out)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", pkg, err)
	}
	return p, nil
}

// hostDebArch is dpkg's architecture for this host ("" if unknown).
func hostDebArch() string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// resolveKernelPackage follows a metapackage (linux-image-cloud-amd64) to
// the versioned kernel package it depends on.
func resolveKernelPackage(ctx context.Context, pkg, debarch string) (*debPackage, error) {
	p, err := aptShow(ctx, pkg, debarch)
	if err != nil {
		return nil, err
	}
	for hops := 0; !versionedKernelRE.MatchString(p.Name); hops++ {
		if hops == 3 {
			return nil, fmt.Errorf("package %s: no versioned linux-image package within 3 dependencies", pkg)
		}
		next := ""
		for _, d := range p.Depends {
			if strings.HasPrefix(d, "linux-image-") {
				next = d
				break
			}
		}
		if next == "" {
			return nil, fmt.Errorf("package %s is not a kernel image and depends on none", p.Name)
		}
		if p, err = aptShow(ctx, next, debarch); err != nil {
			return nil, err
		}
	}
	if p.SHA256 == "" {
		return nil, fmt.Errorf("apt gives no SHA256 for %s %s; cannot verify a download", p.Name, p.Version)
	}
	return p, nil
}

// fetchKernelDeb returns <cache>/debs/<file>.deb for p, downloading it with
// apt-get when absent. A file whose SHA-256 is not the one apt lists (a
// corrupt cache file or a partial download) is deleted and fetched again,
// once.
func fetchKernelDeb(ctx context.Context, cacheDir string, p *debPackage) (string, error) {
	dir := filepath.Join(cacheDir, debsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("package cache: %w", err)
	}
	lock := flock.New(filepath.Join(dir, ".lock"))
	if ok, err := lock.TryLockContext(ctx, 100*time.Millisecond); err != nil || !ok {
		return "", fmt.Errorf("lock package cache: %w", errors.Join(err, ctx.Err()))
	}
	defer lock.Unlock()

	final := filepath.Join(dir, p.fileName())
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if _, err := os.Stat(final); err != nil {
			if err := aptDownload(ctx, dir, final, p); err != nil {
				return "", err
			}
		} else if verifiedBefore(dir, p.fileName(), p.SHA256) {
			return final, nil
		}
		sum, err := hashFile(final)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", final, err)
		}
		if sum == p.SHA256 {
			recordVerified(dir, p.fileName(), sum)
			return final, nil
		}
		lastErr = fmt.Errorf("%s has SHA-256 %s, apt lists %s", filepath.Base(final), sum, p.SHA256)
		slog.Warn("kernel package corrupt; fetching it again", "file", final, "err", lastErr)
		if err := os.Remove(final); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("download of %s %s failed verification twice: %w", p.Name, p.Version, lastErr)
}

// aptDownload runs `apt-get download` in a fresh directory and moves the
// single file it produces to final.
func aptDownload(ctx context.Context, dir, final string, p *debPackage) error {
	tmp, err := os.MkdirTemp(dir, ".dl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// apt drops to the _apt user for downloads; let it into the directory.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, aptDownloadTimeout)
	defer cancel()
	slog.Info("downloading kernel package", "package", p.Name, "version", p.Version, "arch", p.Arch)
	if _, err := runApt(ctx, tmp, "apt-get", "download", "-q", p.Name+":"+p.Arch+"="+p.Version); err != nil {
		return fmt.Errorf("download kernel package: %w", err)
	}
	got, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil {
		return err
	}
	if len(got) != 1 {
		return fmt.Errorf("apt-get download of %s left %d .deb files", p.Name, len(got))
	}
	if err := os.Chmod(got[0], 0o644); err != nil {
		return err
	}
	// apt may date the file from the server; cache prune reads the mtime
	// as the time of download.
	now := time.Now()
	if err := os.Chtimes(got[0], now, now); err != nil {
		return err
	}
	return os.Rename(got[0], final)
}

// aptKernel resolves pkg, fetches and verifies its .deb and unpacks it.
// apt's answer is remembered for aptMemoTTL; when a remembered version can
// no longer be fetched, apt is asked again once.
func aptKernel(ctx context.Context, cacheDir, pkg, debarch string, progress func(string)) (*kernelInfo, string, error) {
	progress("resolve " + pkg)
	p, memo, err := resolveKernelPackageMemo(ctx, cacheDir, pkg, debarch, false)
	if err != nil {
		return nil, "", err
	}
	progress("fetch " + p.Name)
	deb, err := fetchKernelDeb(ctx, cacheDir, p)
	if err != nil && memo && ctx.Err() == nil {
		slog.Info("remembered kernel package unavailable; asking apt again", "package", p.Name, "version", p.Version, "err", err)
		if p, _, err = resolveKernelPackageMemo(ctx, cacheDir, pkg, debarch, true); err != nil {
			return nil, "", err
		}
		deb, err = fetchKernelDeb(ctx, cacheDir, p)
	}
	if err != nil {
		return nil, "", err
	}
	progress("unpack " + p.Name)
	k, err := unpackKernelDeb(deb, filepath.Join(cacheDir, kernelsDir), p.SHA256)
	if err != nil {
		return nil, "", err
	}
	return k, deb, nil
}

package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// aptMemoFile in <cache>/debs remembers apt's answers: `apt-cache show`
// costs ~2 s per call, more than a whole cache-hit build.
const aptMemoFile = "apt-cache.json"

// aptMemoTTL is how long a remembered answer is trusted. apt's lists change
// with `apt-get update`, a few times a day at most; a stale answer names an
// older kernel, which still builds and is re-asked soon after.
const aptMemoTTL = 10 * time.Minute

// aptNow is the memo's clock; a variable so tests can move it.
var aptNow = time.Now

// aptMemo is apt-cache.json.
type aptMemo struct {
	// Packages maps what was asked ("pkg:arch", e.g. a metapackage) to the
	// versioned kernel package apt resolved it to.
	Packages map[string]aptAnswer `json:"packages"`
	// Verified maps a .deb file name to the file's size and mtime when its
	// SHA-256 was last checked, so an unchanged file is not hashed again.
	Verified map[string]debCheck `json:"verified,omitempty"`
}

type aptAnswer struct {
	Package   string    `json:"package"`
	Version   string    `json:"version"`
	Arch      string    `json:"arch"`
	Filename  string    `json:"filename"`
	SHA256    string    `json:"sha256"`
	FetchedAt time.Time `json:"fetched_at"`
}

type debCheck struct {
	Size    int64  `json:"size"`
	MTimeNS int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
}

// loadAptMemo reads the memo; a missing or unreadable one is empty.
func loadAptMemo(debDir string) *aptMemo {
	m := &aptMemo{}
	if b, err := os.ReadFile(filepath.Join(debDir, aptMemoFile)); err == nil {
		if err := json.Unmarshal(b, m); err != nil {
			slog.Debug("ignoring unreadable apt memo", "err", err)
			m = &aptMemo{}
		}
	}
	if m.Packages == nil {
		m.Packages = map[string]aptAnswer{}
	}
	if m.Verified == nil {
		m.Verified = map[string]debCheck{}
	}
	return m
}

// save replaces the memo atomically. Concurrent savers may lose each
// other's updates; that only costs a repeated question later.
func (m *aptMemo) save(debDir string) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err == nil {
		err = os.MkdirAll(debDir, 0o755)
	}
	if err != nil {
		slog.Debug("apt memo not saved", "err", err)
		return
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(debDir, ".tmp-"+aptMemoFile+"-"+hex.EncodeToString(rnd[:]))
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		slog.Debug("apt memo not saved", "err", err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(debDir, aptMemoFile)); err != nil {
		os.Remove(tmp)
		slog.Debug("apt memo not saved", "err", err)
	}
}

// fresh returns the remembered answer for key if it is young enough. An
// answer from the future (clock stepped back) is not trusted.
func (m *aptMemo) fresh(key string) (*debPackage, bool) {
	a, ok := m.Packages[key]
	if !ok || a.SHA256 == "" {
		return nil, false
	}
	age := aptNow().Sub(a.FetchedAt)
	if age < 0 || age >= aptMemoTTL {
		return nil, false
	}
	return &debPackage{Name: a.Package, Version: a.Version, Arch: a.Arch, Filename: a.Filename, SHA256: a.SHA256}, true
}

// resolveKernelPackageMemo is resolveKernelPackage with answers remembered
// in <cache>/debs for aptMemoTTL. memo reports whether apt was skipped.
func resolveKernelPackageMemo(ctx context.Context, cacheDir, pkg, debarch string, refresh bool) (p *debPackage, memo bool, err error) {
	dir := filepath.Join(cacheDir, debsDir)
	key := pkg + ":" + debarch
	if !refresh {
		if p, ok := loadAptMemo(dir).fresh(key); ok {
			return p, true, nil
		}
	}
	if p, err = resolveKernelPackage(ctx, pkg, debarch); err != nil {
		return nil, false, err
	}
	m := loadAptMemo(dir)
	m.Packages[key] = aptAnswer{Package: p.Name, Version: p.Version, Arch: p.Arch, Filename: p.Filename, SHA256: p.SHA256, FetchedAt: aptNow()}
	m.save(dir)
	return p, false, nil
}

// verifiedBefore reports whether file was hashed to sum and has not changed
// (size, mtime) since.
func verifiedBefore(debDir, file, sum string) bool {
	fi, err := os.Stat(filepath.Join(debDir, file))
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	c, ok := loadAptMemo(debDir).Verified[file]
	return ok && c.SHA256 == sum && c.Size == fi.Size() && c.MTimeNS == fi.ModTime().UnixNano()
}

// recordVerified remembers that file hashed to sum.
func recordVerified(debDir, file, sum string) {
	fi, err := os.Stat(filepath.Join(debDir, file))
	if err != nil {
		return
	}
	m := loadAptMemo(debDir)
	m.Verified[file] = debCheck{Size: fi.Size(), MTimeNS: fi.ModTime().UnixNano(), SHA256: sum}
	// Forget files that are gone (pruned, replaced by a newer version).
	for f := range m.Verified {
		if _, err := os.Stat(filepath.Join(debDir, f)); err != nil {
			delete(m.Verified, f)
		}
	}
	m.save(debDir)
}

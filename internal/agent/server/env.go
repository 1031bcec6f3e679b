package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BasePath is PATH for every exec before guest config and request env apply.
const BasePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// mergeEnv layers KEY=VALUE lists; a later layer overrides an earlier one's
// value but the key keeps its first position, so the result is deterministic.
func mergeEnv(layers ...[]string) ([]string, error) {
	var out []string
	idx := map[string]int{}
	for _, layer := range layers {
		for _, kv := range layer {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" || strings.ContainsRune(kv, 0) {
				return nil, fmt.Errorf("invalid environment entry %q (want KEY=VALUE)", kv)
			}
			if i, seen := idx[k]; seen {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out, nil
}

func getenv(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath resolves argv[0] against the child's PATH (not the agent's), the
// way execvp would. Names with a slash are used as given.
// lookPathIn is lookPath inside root ("": the guest's own): the path it
// returns is as the chrooted process sees it. Symlinks inside root are
// taken as they are (their targets are root's, not the guest's).
func lookPathIn(root, name, path string) (string, bool) {
	if root == "" {
		return lookPath(name, path)
	}
	if strings.Contains(name, "/") {
		return name, true
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(filepath.Join(root, p))
		if err == nil && (fi.Mode()&os.ModeSymlink != 0 || fi.Mode().IsRegular() && fi.Mode()&0o111 != 0) {
			return p, true
		}
	}
	return "", false
}

func lookPath(name, path string) (string, bool) {
	if strings.Contains(name, "/") {
		return name, true
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

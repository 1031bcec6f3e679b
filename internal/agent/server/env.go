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

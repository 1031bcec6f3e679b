package image

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Host apt configuration, variables so tests can point them elsewhere.
var (
	aptSourcesList = "/etc/apt/sources.list"
	aptSourcesDir  = "/etc/apt/sources.list.d"
)

// fallbackMirror is used when the host has no Debian source for the suite.
const fallbackMirror = "http://deb.debian.org/debian"

// aptSource is one deb source: a URI with its suites and components.
type aptSource struct {
	URI        string
	Suites     []string
	Components []string
}

// parseSourcesList reads one-line-style sources ("deb [opts] URI suite comp...").
func parseSourcesList(b []byte) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options: up to the token ending in ']'
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, aptSource{URI: f[0], Suites: []string{f[1]}, Components: f[2:]})
	}
	return out
}

// parseDeb822Sources reads .sources files: stanzas of "Key: value" lines.
func parseDeb822Sources(b []byte) []aptSource {
	var out []aptSource
	for _, stanza := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
		fields := map[string]string{}
		last := ""
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			if (line[0] == ' ' || line[0] == '\t') && last != "" {
				fields[last] += " " + strings.TrimSpace(line)
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
		if strings.EqualFold(fields["enabled"], "no") || !hasField(fields["types"], "deb") {
			continue
		}
		comps := strings.Fields(fields["components"])
		for _, uri := range strings.Fields(fields["uris"]) {
			out = append(out, aptSource{URI: uri, Suites: strings.Fields(fields["suites"]), Components: comps})
		}
	}
	return out
}

func hasField(s, want string) bool {
	for _, f := range strings.Fields(s) {
		if f == want {
			return true
		}
	}
	return false
}

// hostAptSources reads the host's enabled deb sources.
func hostAptSources() []aptSource {
	var out []aptSource
	if b, err := os.ReadFile(aptSourcesList); err == nil {
		out = append(out, parseSourcesList(b)...)
	}
	lists, _ := filepath.Glob(filepath.Join(aptSourcesDir, "*.list"))
	sources, _ := filepath.Glob(filepath.Join(aptSourcesDir, "*.sources"))
	sort.Strings(lists)
	sort.Strings(sources)
	for _, f := range lists {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, parseSourcesList(b)...)
		}
	}
	for _, f := range sources {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, parseDeb822Sources(b)...)
		}
	}
	return out
}

// mirrorLines picks the "deb URI suite main" lines for suite from the host's
// sources: the suite itself plus its -updates and -security pockets where the
// host has them. Only the mirrors the host already uses are contacted; when
// the host has none for the suite, its main Debian mirror (or
// deb.debian.org) is used with the suite substituted.
func mirrorLines(srcs []aptSource, suite string) []string {
	var lines []string
	seen := map[string]bool{}
	addLine := func(uri, s string) {
		l := fmt.Sprintf("deb %s %s main", uri, s)
		if !seen[l] {
			seen[l] = true
			lines = append(lines, l)
		}
	}
	haveMain := false
	for _, pocket := range []string{suite, suite + "-updates", suite + "-security"} {
		for _, src := range srcs {
			if !usableURI(src.URI) || !hasString(src.Components, "main") || !hasString(src.Suites, pocket) {
				continue
			}
			addLine(src.URI, pocket)
			haveMain = haveMain || pocket == suite
		}
	}
	if haveMain {
		return lines
	}
	mirror := fallbackMirror
	for _, src := range srcs {
		if usableURI(src.URI) && hasString(src.Components, "main") && !strings.Contains(src.URI, "security") &&
			isDebianSuiteList(src.Suites) {
			mirror = src.URI
			break
		}
	}
	return []string{fmt.Sprintf("deb %s %s main", mirror, suite)}
}

func usableURI(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "file:/")
}

// isDebianSuiteList rejects third-party repositories with made-up suites
// ("nodistro", "cloud-sdk-bookworm") as a base for another suite.
func isDebianSuiteList(suites []string) bool {
	for _, s := range suites {
		switch strings.SplitN(s, "-", 2)[0] {
		case "stable", "testing", "unstable", "sid", "oldstable", "buster", "bullseye", "bookworm", "trixie", "forky":
			return true
		}
	}
	return false
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

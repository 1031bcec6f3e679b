package registry

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultTag is the tag a reference without one means.
const DefaultTag = "latest"

var (
	refTagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	refDigestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// SplitRef splits a template reference into its store's address and the tag
// or digest inside it: "localhost:5000/tpl/web:v1" is ("localhost:5000/tpl/web",
// "v1"), "s3://bucket/team/web@sha256:..." is ("s3://bucket/team/web",
// "sha256:..."), and no tag means DefaultTag.
func SplitRef(ref string) (addr, tag string, err error) {
	if ref == "" || len(ref) > 1024 || strings.ContainsAny(ref, " \t\r\n\x00") {
		return "", "", fmt.Errorf("reference %q: write HOST[:PORT]/NAME[:TAG] or s3://BUCKET/PREFIX[:TAG]", ref)
	}
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		addr, tag = ref[:i], ref[i+1:]
		if !refDigestRE.MatchString(tag) {
			return "", "", fmt.Errorf("reference %q: %q is not a sha256:<64 hex> digest", ref, tag)
		}
		return addr, tag, checkAddr(ref, addr)
	}
	addr, tag = ref, DefaultTag
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash && slash >= 0 {
		addr, tag = ref[:i], ref[i+1:]
	}
	if !refTagRE.MatchString(tag) {
		return "", "", fmt.Errorf("reference %q: tag %q must be 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)", ref, tag)
	}
	return addr, tag, checkAddr(ref, addr)
}

func checkAddr(ref, addr string) error {
	rest := strings.TrimPrefix(addr, "s3://")
	if rest == "" || !strings.Contains(strings.Trim(rest, "/"), "/") && !strings.HasPrefix(addr, "s3://") {
		return fmt.Errorf("reference %q: name the repository too (HOST[:PORT]/NAME[:TAG])", ref)
	}
	return nil
}

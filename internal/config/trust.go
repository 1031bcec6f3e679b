package config

import (
	"fmt"
	"strings"
	"unicode"
)

// TrustPolicy is config.toml's [trust] table: where a pulled template must
// carry a signature by a trusted key. Unset means signatures are checked
// when present but not required.
type TrustPolicy struct {
	// RequireSignatures requires a valid signature from every store.
	RequireSignatures bool `toml:"require_signatures,omitempty" json:"require_signatures,omitempty"`
	// RequireSignaturesFor requires one from the stores whose address
	// starts with one of these prefixes ("registry.example.com",
	// "s3://bucket/team"), matched on whole path segments.
	RequireSignaturesFor []string `toml:"require_signatures_for,omitempty" json:"require_signatures_for,omitempty"`
}

// Validate refuses prefixes that would match nothing or everything by
// accident: an empty one, or one with spaces or control characters.
func (p TrustPolicy) Validate() error {
	for i, pre := range p.RequireSignaturesFor {
		if strings.IndexFunc(pre, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("trust.require_signatures_for[%d] = %q: must not contain spaces or control characters", i, pre)
		}
		if n := normalizeAddr(pre); n == "" || strings.HasSuffix(n, ":") {
			return fmt.Errorf("trust.require_signatures_for[%d] = %q: must name a registry host or bucket (e.g. \"registry.example.com\" or \"s3://bucket\")", i, pre)
		}
	}
	return nil
}

// Requires reports whether a template pulled from storeAddr (as
// registry.Store's String prints it: "host[:port]/repo" or
// "s3://bucket/prefix") must be signed by a trusted key.
//
// A prefix matches the address itself and anything below it on a segment
// boundary: "registry.example.com" matches "registry.example.com/web" and
// "registry.example.com:5000/web" but not "registry.example.community/web",
// and "s3://bucket" does not match "s3://bucket-2". Matching ignores case
// and an "https://", "http://" or "oci://" scheme, so that spelling the
// same store another way cannot skip the requirement (ignoring case can
// only make it apply more widely, e.g. to S3 keys differing in case).
func (p TrustPolicy) Requires(storeAddr string) bool {
	if p.RequireSignatures {
		return true
	}
	addr := normalizeAddr(storeAddr)
	for _, pre := range p.RequireSignaturesFor {
		if prefixMatch(addr, normalizeAddr(pre)) {
			return true
		}
	}
	return false
}

// IsZero reports an absent [trust] table (for omitzero).
func (p TrustPolicy) IsZero() bool {
	return !p.RequireSignatures && len(p.RequireSignaturesFor) == 0
}

func normalizeAddr(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, scheme := range []string{"https://", "http://", "oci://"} {
		s = strings.TrimPrefix(s, scheme)
	}
	return strings.TrimRight(s, "/")
}

func prefixMatch(addr, pre string) bool {
	if pre == "" || !strings.HasPrefix(addr, pre) {
		return false
	}
	if len(addr) == len(pre) {
		return true
	}
	// ':' starts a port or a tag, '@' a digest: still the same store.
	switch addr[len(pre)] {
	case '/', ':', '@':
		return true
	}
	return false
}

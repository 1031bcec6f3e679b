package api

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// MinVersion is the oldest Firecracker we drive. 1.14 brought /serial,
// which the backend needs for the console; 1.12 network_overrides on load.
// Older releases also lack fixes to vsock after restore (§3.4 of the
// reference).
var MinVersion = SemVer{1, 14, 0}

// VsockOverrideVersion is the first release that takes vsock_override on
// snapshot load; older ones must not be sent the field.
var VsockOverrideVersion = SemVer{1, 16, 0}

// SemVer is a release number.
type SemVer struct{ Major, Minor, Patch int }

func (v SemVer) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than w.
func (v SemVer) Less(w SemVer) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// ParseVersion reads "1.16.1", "v1.16.1" or "1.17.0-dev".
func ParseVersion(s string) (SemVer, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(t, "-+ "); i >= 0 {
		t = t[:i]
	}
	parts := strings.Split(t, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return SemVer{}, fmt.Errorf("firecracker version %q: want MAJOR.MINOR.PATCH", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 1<<20 {
			return SemVer{}, fmt.Errorf("firecracker version %q: want MAJOR.MINOR.PATCH", s)
		}
		n[i] = v
	}
	return SemVer{n[0], n[1], n[2]}, nil
}

// CheckVersion asks the VMM its version and refuses one older than
// MinVersion, naming both.
func (c *Client) CheckVersion(ctx context.Context) (SemVer, error) {
	s, err := c.Version(ctx)
	if err != nil {
		return SemVer{}, err
	}
	v, err := ParseVersion(s)
	if err != nil {
		return SemVer{}, err
	}
	if v.Less(MinVersion) {
		return v, fmt.Errorf("firecracker %s is too old: mvm needs %s or newer (install a newer release from https://github.com/firecracker-microvm/firecracker/releases)", v, MinVersion)
	}
	return v, nil
}

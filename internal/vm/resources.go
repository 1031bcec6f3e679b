package vm

import (
	"fmt"
	"strconv"
	"strings"
)

// Precedence levels, highest first.
const (
	SourceFlag       = "flag"
	SourceVMConfig   = "vm-config"
	SourceImage      = "image"
	SourceUserConfig = "user-config"
	SourceDefault    = "default"
)

// choice is one candidate value for a setting and where it came from.
type choice struct {
	value  int
	source string
}

// firstSet returns the first candidate with a non-zero value; candidates are
// given highest precedence first and always end with the built-in default.
func firstSet(cands ...choice) choice {
	for _, c := range cands {
		if c.value > 0 {
			return c
		}
	}
	return choice{}
}

// ParseSize parses a memory size into MiB: a number with an optional
// case-insensitive suffix (none, M, MB, MiB = MiB; G, GB, GiB = GiB).
func ParseSize(s string) (int, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"gib", 1024}, {"gb", 1024}, {"g", 1024}, {"mib", 1}, {"mb", 1}, {"m", 1}} {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, suf.s)), suf.m
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || f != f {
		return 0, fmt.Errorf("invalid size %q: use e.g. 512M or 2G", s)
	}
	mib := f * float64(mult)
	if mib > 1<<20 {
		return 0, fmt.Errorf("invalid size %q: larger than 1 TiB", s)
	}
	if mib < 64 {
		return 0, fmt.Errorf("invalid size %q: a VM needs at least 64 MiB", s)
	}
	return int(mib + 0.5), nil
}

package vm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/config"
)

// Precedence levels, highest first.
const (
	SourceFlag       = "flag"
	SourceVMConfig   = "vm-config"
	SourceImage      = "image"
	SourceUserConfig = "user-config"
	SourceDefault    = "default"
	// SourceSnapshot marks values a restored VM takes from its snapshot.
	SourceSnapshot = "snapshot"
	// SourceTemplate marks values taken from up --template's defaults.
	SourceTemplate = "template"
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

// strChoice is choice for strings.
type strChoice struct {
	value  string
	source string
}

func firstStr(cands ...strChoice) strChoice {
	for _, c := range cands {
		if c.value != "" {
			return c
		}
	}
	return strChoice{}
}

// resolveImage picks the image: flag > VM config > user config > default.
// (A recipe cannot name its own image.)
func resolveImage(o UpOptions, vc *VMConfig, user *config.Config) strChoice {
	if vc == nil {
		vc = &VMConfig{}
	}
	return firstStr(strChoice{o.Image, SourceFlag}, strChoice{vc.Image, SourceVMConfig},
		strChoice{user.DefaultImage, SourceUserConfig}, strChoice{config.BuiltinImage, SourceDefault})
}

// resolveBackendName picks the backend name; "" (from the default level)
// means "choose automatically".
func resolveBackendName(o UpOptions, vc *VMConfig, user *config.Config) strChoice {
	if vc == nil {
		vc = &VMConfig{}
	}
	c := firstStr(strChoice{o.Backend, SourceFlag}, strChoice{vc.Backend, SourceVMConfig},
		strChoice{user.DefaultBackend, SourceUserConfig})
	if c.value == "" {
		c.source = SourceDefault
	}
	return c
}

// resolveShape picks cpus and memory: flag > VM config > image recipe >
// user config > built-in default.
func resolveShape(o UpOptions, vc *VMConfig, recipeCPUs, recipeMemMiB int, user *config.Config) (cpus, mem choice) {
	var vcCPUs int
	if vc != nil {
		vcCPUs = vc.CPUs
	}
	cpus = firstSet(choice{o.CPUs, SourceFlag}, choice{vcCPUs, SourceVMConfig}, choice{recipeCPUs, SourceImage},
		choice{user.DefaultCPUs, SourceUserConfig}, choice{config.BuiltinCPUs, SourceDefault})
	mem = firstSet(choice{o.MemoryMiB, SourceFlag}, choice{vc.MemMiB(), SourceVMConfig}, choice{recipeMemMiB, SourceImage},
		choice{user.DefaultMemoryMiB, SourceUserConfig}, choice{config.BuiltinMemoryMiB, SourceDefault})
	return cpus, mem
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

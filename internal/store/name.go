package store

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"regexp"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks a VM name: 1–63 characters of [a-z0-9-], not starting
// or ending with '-'. Names become directory and host names, so nothing else.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid VM name: empty (use 1-63 characters of a-z, 0-9 and '-')")
	case len(name) > 63:
		return fmt.Errorf("invalid VM name %q: %d characters, at most 63 allowed", name, len(name))
	case !nameRE.MatchString(name):
		return fmt.Errorf("invalid VM name %q: use lowercase letters, digits and '-', not starting or ending with '-'", name)
	}
	return nil
}

var (
	adjectives = []string{"amber", "bold", "brisk", "calm", "clever", "crisp", "eager", "fuzzy", "gentle", "happy",
		"jolly", "keen", "lively", "lucky", "mellow", "nimble", "proud", "quiet", "rapid", "silent", "snappy", "sunny",
		"swift", "tidy", "vivid", "witty", "zesty"}
	nouns = []string{"otter", "falcon", "badger", "heron", "lynx", "marten", "newt", "orca", "panda", "quail",
		"raven", "seal", "tapir", "viper", "walrus", "yak", "zebra", "bison", "crane", "dingo", "egret", "ferret",
		"gecko", "ibis", "koala", "lemur", "moose"}
)

// RandomName returns an adjective-noun name such as "swift-otter"; taken is
// consulted so the result is free (a digit suffix is added after collisions).
func RandomName(taken func(string) bool) string {
	for i := 0; ; i++ {
		n := pick(adjectives) + "-" + pick(nouns)
		if i >= 20 {
			n += fmt.Sprintf("-%d", 2+randInt(9998))
		}
		if !taken(n) {
			return n
		}
	}
}

func pick(s []string) string { return s[randInt(len(s))] }

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

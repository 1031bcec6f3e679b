package image

import (
	"regexp"
	"sync"
)

// lazyRegexp compiles its expression on first use. Every mvmctl command
// links this package and most never match anything, so compiling a dozen
// patterns at init would tax each one (about a millisecond).
type lazyRegexp struct {
	re func() *regexp.Regexp
}

func lazyRE(expr string) *lazyRegexp {
	return &lazyRegexp{re: sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })}
}

func (l *lazyRegexp) MatchString(s string) bool { return l.re().MatchString(s) }

func (l *lazyRegexp) ReplaceAllString(src, repl string) string {
	return l.re().ReplaceAllString(src, repl)
}

func (l *lazyRegexp) String() string { return l.re().String() }

package audit

import "strings"

// Redacted replaces a secret in recorded arguments.
const Redacted = "<redacted>"

// FlagLookup describes the flags of the command that args belong to. name is
// a long flag name without dashes, or a one-letter shorthand when short is
// true. It returns the flag's long name and whether it takes a value (a
// boolean flag does not); ok is false for an unknown flag.
type FlagLookup func(name string, short bool) (long string, takesValue, ok bool)

// sensitiveWords mark a flag whose value is a secret.
var sensitiveWords = []string{"password", "passwd", "secret", "token", "credential", "apikey", "api-key", "api_key", "private-key"}

func sensitiveFlag(long string) bool {
	l := strings.ToLower(long)
	for _, w := range sensitiveWords {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// envFlag is a flag whose values are KEY=VALUE pairs with secret values.
func envFlag(long string) bool {
	l := strings.ToLower(long)
	return l == "env" || l == "environment" || strings.HasSuffix(l, "-env")
}

// RedactArgs returns a copy of args (the argv after the binary) with
// secrets replaced by Redacted:
//
//   - the value of a flag whose name contains password, secret, token and
//     the like (KEY=VALUE becomes KEY=<redacted>, anything else <redacted>),
//     in the --flag VALUE, --flag=VALUE, -f VALUE and -fVALUE forms;
//   - the VALUE of --env KEY=VALUE (and -e, --*-env);
//   - after "--" (a command run in the guest), every KEY=VALUE argument and
//     the value of any secret-named flag of that command.
//
// lookup may be nil; unknown flags are assumed to take a value only when
// their name is secret-like.
func RedactArgs(args []string, lookup FlagLookup) []string {
	if lookup == nil {
		lookup = func(string, bool) (string, bool, bool) { return "", false, false }
	}
	out := make([]string, len(args))
	copy(out, args)
	// redactNext is how to redact the next argument (the value of a flag
	// given as "--flag VALUE"), nil when it is not a flag's value.
	var redactNext func(string) string
	afterDash := false
	for i, a := range out {
		if redactNext != nil {
			out[i] = redactNext(a)
			redactNext = nil
			continue
		}
		switch {
		case afterDash:
			out[i], redactNext = redactGuestArg(a)
		case a == "--":
			afterDash = true
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			long, takes, ok := lookup(name, false)
			if !ok {
				long, takes = name, sensitiveFlag(name)
			}
			red := valueRedactor(long)
			switch {
			case hasVal:
				if red != nil {
					out[i] = "--" + name + "=" + red(val)
				}
			case takes:
				// The value is the next argument, even if it looks like a flag.
				redactNext = orKeep(red)
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			out[i], redactNext = redactShorthands(a, lookup)
		}
	}
	return out
}

// redactShorthands handles a cluster of one-letter flags such as -it or
// -eKEY=VALUE or -e (value in the next argument).
func redactShorthands(a string, lookup FlagLookup) (string, func(string) string) {
	for j := 1; j < len(a); j++ {
		long, takes, ok := lookup(a[j:j+1], true)
		if !ok {
			return a, nil
		}
		if !takes {
			continue
		}
		red := valueRedactor(long)
		rest := a[j+1:]
		if rest == "" {
			return a, orKeep(red)
		}
		if red == nil {
			return a, nil
		}
		eq := ""
		if strings.HasPrefix(rest, "=") {
			eq, rest = "=", rest[1:]
		}
		return a[:j+1] + eq + red(rest), nil
	}
	return a, nil
}

// valueRedactor returns how to redact the values of the flag named long,
// nil when they are not secret.
func valueRedactor(long string) func(string) string {
	switch {
	case sensitiveFlag(long):
		return redactSecret
	case envFlag(long):
		return redactEnv
	}
	return nil
}

func orKeep(red func(string) string) func(string) string {
	if red == nil {
		return func(v string) string { return v }
	}
	return red
}

// redactGuestArg redacts one argument of a command run in the guest.
func redactGuestArg(a string) (string, func(string) string) {
	if strings.HasPrefix(a, "-") {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if sensitiveFlag(name) {
			if hasVal {
				return a[:len(a)-len(val)] + Redacted, nil
			}
			return a, redactSecret
		}
		return a, nil
	}
	if k, _, ok := cutAssignment(a); ok {
		return k + "=" + Redacted, nil
	}
	return a, nil
}

// redactSecret hides a secret value, keeping the KEY of KEY=VALUE.
func redactSecret(v string) string {
	if k, _, ok := cutAssignment(v); ok {
		return k + "=" + Redacted
	}
	return Redacted
}

// redactEnv hides the VALUE of KEY=VALUE; a bare KEY is not a secret.
func redactEnv(v string) string {
	if k, _, ok := strings.Cut(v, "="); ok {
		return k + "=" + Redacted
	}
	return v
}

// cutAssignment splits KEY=VALUE where KEY is a shell variable name.
func cutAssignment(s string) (key, val string, ok bool) {
	key, val, ok = strings.Cut(s, "=")
	if !ok || key == "" {
		return "", "", false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return "", "", false
		}
	}
	return key, val, true
}

package audit

import (
	"slices"
	"strings"
	"testing"
)

// testFlags mimics a command's flag set: long name -> shorthand, and
// whether the flag takes a value.
var testFlags = map[string]struct {
	short string
	value bool
}{
	"env":         {"e", true},
	"name":        {"", true},
	"interactive": {"i", false},
	"tty":         {"t", false},
	"user":        {"u", true},
	"password":    {"", true},
	"secret":      {"", true},
	"api-token":   {"", true},
	"force":       {"f", false},
	"json":        {"", false},
}

func testLookup(name string, short bool) (string, bool, bool) {
	for long, f := range testFlags {
		if (!short && long == name) || (short && f.short == name) {
			return long, f.value, true
		}
	}
	return "", false, false
}

func TestRedactArgs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"nothing secret", "up --name web --cpus 2", "up --name web --cpus 2"},
		{"password value", "x --password hunter2 y", "x --password <redacted> y"},
		{"password equals", "x --password=hunter2", "x --password=<redacted>"},
		{"secret KEY=VALUE", "x --secret DB_PASS=hunter2", "x --secret DB_PASS=<redacted>"},
		{"secret equals KEY=VALUE", "x --secret=DB_PASS=hunter2", "x --secret=DB_PASS=<redacted>"},
		{"token-named flag", "x --api-token abc", "x --api-token <redacted>"},
		{"unknown secret flag", "x --github-token abc --other v", "x --github-token <redacted> --other v"},
		{"unknown secret flag equals", "x --db-password=abc", "x --db-password=<redacted>"},
		{"env long", "exec web --env TOKEN=abc -- true", "exec web --env TOKEN=<redacted> -- true"},
		{"env long equals", "exec web --env=TOKEN=abc -- true", "exec web --env=TOKEN=<redacted> -- true"},
		{"env short", "exec web -e TOKEN=abc -- true", "exec web -e TOKEN=<redacted> -- true"},
		{"env short attached", "exec web -eTOKEN=abc -- true", "exec web -eTOKEN=<redacted> -- true"},
		{"env short with equals", "exec web -e=TOKEN=abc -- true", "exec web -e=TOKEN=<redacted> -- true"},
		{"env in a cluster", "exec web -it -eA=b -- sh", "exec web -it -eA=<redacted> -- sh"},
		{"cluster ending in env", "exec web -ie A=b -- sh", "exec web -ie A=<redacted> -- sh"},
		{"env bare key", "exec web -e HOME -- true", "exec web -e HOME -- true"},
		{"empty value", "x --password=", "x --password=<redacted>"},
		{"guest KEY=VALUE", "exec web -- env A=1 B_2=two ./app", "exec web -- env A=<redacted> B_2=<redacted> ./app"},
		{"guest secret flag", "exec web -- mysql --password pw -h db", "exec web -- mysql --password <redacted> -h db"},
		{"guest secret flag equals", "exec web -- app --token=pw", "exec web -- app --token=<redacted>"},
		{"guest not an assignment", "exec web -- echo 1=2 a-b=c =x", "exec web -- echo 1=2 a-b=c =x"},
		{"value that looks like a flag", "exec web --user --password -- true", "exec web --user --password -- true"},
		{"equals outside guest kept", "up --name a=b", "up --name a=b"},
		{"password flag as last arg", "x --password", "x --password"},
		{"bool flags", "rm -f web --json", "rm -f web --json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Fields(tt.in)
			orig := slices.Clone(in)
			got := strings.Join(RedactArgs(in, testLookup), " ")
			if got != tt.want {
				t.Fatalf("RedactArgs(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if !slices.Equal(in, orig) {
				t.Fatal("RedactArgs modified its argument")
			}
		})
	}
}

func TestRedactArgsNilLookup(t *testing.T) {
	got := RedactArgs([]string{"x", "--token", "abc", "-e", "A=b"}, nil)
	if want := []string{"x", "--token", Redacted, "-e", "A=b"}; !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}

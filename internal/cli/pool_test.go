package cli

import (
	"strings"
	"testing"
)

// Pool commands refuse bad input before anything boots.
func TestPoolArgs(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{[]string{"pool", "ls"}, 0, "No pools"},
		{[]string{"pool", "ls", "--json"}, 0, "[]"},
		{[]string{"pool", "ls", "--format", "{{.Name}} {{.Ready}}"}, 0, ""},
		{[]string{"pool", "ls", "--format", "{{.Nope}}"}, 0, ""}, // no items: the template never runs
		{[]string{"pool", "create"}, 2, "the pool's name"},
		{[]string{"pool", "create", "p", "--size", "2"}, 1, "exactly one of --template or --from-snapshot"},
		{[]string{"pool", "create", "p", "--template", "t", "--from-snapshot", "s"}, 2, "none of the others can be"},
		{[]string{"pool", "create", "p", "--template", "nope", "--size", "2"}, 1, "nope"},
		{[]string{"pool", "create", "p", "--from-snapshot", "nope"}, 1, "no such snapshot"},
		{[]string{"pool", "create", "Bad", "--template", "t"}, 1, "pool name"},
		{[]string{"pool", "inspect", "nope"}, 1, "no such pool"},
		{[]string{"pool", "rm", "nope"}, 1, "no such pool"},
		{[]string{"up", "--pool", "nope"}, 1, "no such pool"},
		{[]string{"up", "--pool", "p", "--cpus", "2"}, 1, "--pool cannot be combined with [--cpus]"},
		{[]string{"up", "--pool", "p", "--image", "minimal"}, 2, "none of the others can be"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Setenv("MVM_SHARE_DIR", t.TempDir())
			code, out, errs := run(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tt.code, out, errs, tt.want)
			}
		})
	}
}

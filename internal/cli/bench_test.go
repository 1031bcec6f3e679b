package cli

import (
	"strings"
	"testing"
)

// Bad invocations fail as usage errors before anything is booted.
func TestBenchArgs(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench", "nope"}, 2, `unknown benchmark "nope"`},
		{[]string{"bench", "boot", "exec"}, 2, "at most one"},
		{[]string{"bench", "boot", "-n", "0"}, 2, "-n must be at least 1"},
		{[]string{"bench", "-n", "-3"}, 2, "-n must be at least 1"},
		{[]string{"bench", "exec", "--exec-n", "-1"}, 2, "--exec-n must not be negative"},
		{[]string{"bench", "-n", "x"}, 2, "invalid argument"},
		{[]string{"bench", "--help"}, 0, "bench [boot|restore|exec|pool|all]"},
		{[]string{"help", "bench"}, 0, "target ≤ 1.10×"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := run(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tt.code, out, errs, tt.want)
			}
		})
	}
}

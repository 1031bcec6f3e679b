package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("MVM_STATE_DIR", t.TempDir())
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	t.Setenv("MVM_CONFIG_DIR", t.TempDir())
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{[]string{"version"}, 0, "mvmctl"},
		{[]string{"--version"}, 0, "mvmctl"},
		{[]string{"ls", "--json"}, 0, "[]"},
		{[]string{"ls", "-a"}, 0, "No VMs"},
		{[]string{}, 0, "Usage"},
		{[]string{"nope"}, 2, "unknown command"},
		{[]string{"ls", "--nope"}, 2, "unknown flag"},
		{[]string{"exec", "x"}, 2, "needs a VM name and a command"},
		{[]string{"logs"}, 2, "exactly one VM name"},
		{[]string{"up", "--memory", "12"}, 2, "at least 64 MiB"},
		{[]string{"up", "--cpus", "999"}, 2, "between 1 and 255"},
		{[]string{"exec", "ghost", "--", "true"}, 1, "no such VM"},
		{[]string{"rm", "Bad_Name"}, 1, "invalid VM name"},
		{[]string{"completions", "tcsh"}, 2, "unknown shell"},
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

func TestCompletionsForEveryShell(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := run(t, "completions", sh)
		if code != 0 || !strings.Contains(out, "mvmctl") {
			t.Fatalf("%s: exit %d %s", sh, code, errs)
		}
	}
}

// Every command documents itself and has a short description.
func TestHelpOnEveryCommand(t *testing.T) {
	root := NewRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range allCommands(root) {
		if c.Short == "" {
			t.Errorf("%s has no short description", c.CommandPath())
		}
		args := append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "mvmctl")), "--help")
		code, out, errs := run(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errs)
		}
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MVM_CONFIG_DIR", dir)
	if err := writeFile(dir+"/config.toml", "default_cpus = 2\nbogus = 1\n"); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"config", "show"}, strings.NewReader(""), &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "config.toml:2") || !strings.Contains(errb.String(), `"bogus"`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/image"
)

func TestListFormat(t *testing.T) {
	var names []string
	for _, r := range image.Catalog() {
		names = append(names, r.Name)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // exact stdout, or "" to skip
		err  string // in stderr
	}{
		{"one field per line", []string{"image", "list", "--format", "{{.Name}}"}, 0, strings.Join(names, "\n") + "\n", ""},
		{"json function", []string{"image", "list", "--format", `{{json .Name}}`}, 0, `"` + strings.Join(names, "\"\n\"") + "\"\n", ""},
		{"unknown field", []string{"image", "list", "--format", "{{.Nope}}"}, 2, "", "--format"},
		{"bad template", []string{"image", "list", "--format", "{{.Name"}, 2, "", "--format"},
		{"with --json", []string{"image", "list", "--format", "{{.Name}}", "--json"}, 2, "", "do not go together"},
		{"empty listing", []string{"network", "ls", "--format", "{{.Name}}"}, 0, "", ""},
		{"snapshots", []string{"snapshot", "ls", "--format", "{{.Name}}"}, 0, "", ""},
		{"templates", []string{"template", "list", "--format", "{{.Name}}"}, 0, "", ""},
		{"keys", []string{"key", "list", "--format", "{{.Kind}}"}, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MVM_SHARE_DIR", t.TempDir())
			code, out, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.err) || tc.out != "" && out != tc.out {
				t.Fatalf("exit %d (want %d)\nstdout: %q (want %q)\nstderr: %s", code, tc.code, out, tc.out, errs)
			}
			if tc.code == 0 && tc.out == "" && out != "" {
				t.Fatalf("an empty listing printed %q", out)
			}
		})
	}

	// --format json is --json.
	_, a, _ := run(t, "image", "list", "--format", "json")
	_, b, _ := run(t, "image", "list", "--json")
	var av any
	if json.Unmarshal([]byte(a), &av) != nil || a != b {
		t.Fatalf("--format json gave %q, --json %q", a, b)
	}
}

// Every listing takes --format.
func TestEveryListingHasFormat(t *testing.T) {
	for _, c := range allCommands(newRoot(&globals{})) {
		if c.Name() != "ls" && c.Name() != "list" && c.Name() != "search" {
			continue
		}
		if c.Flags().Lookup("format") == nil {
			t.Errorf("%s has no --format", c.CommandPath())
		}
	}
}

func TestNameCompletions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // a line of the completion output
	}{
		{[]string{"__complete", "up", "--image", ""}, "minimal"},
		{[]string{"__complete", "up", "--backend", ""}, "qemu"},
		{[]string{"__complete", "up", "--network", ""}, "none"},
		{[]string{"__complete", "image", "info", ""}, "minimal"},
		{[]string{"__complete", "snapshot", "rm", ""}, ":4"},
		{[]string{"__complete", "network", "inspect", ""}, ":4"},
		{[]string{"__complete", "config", "set", ""}, "default_cpus"},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			t.Setenv("MVM_SHARE_DIR", t.TempDir())
			code, out, errs := run(t, tc.args...)
			if code != 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d\nstdout %s\nstderr %s\nwant %q", code, out, errs, tc.want)
			}
		})
	}
}

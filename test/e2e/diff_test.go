package e2e

import (
	"encoding/json"
	"testing"
	"time"
)

// TestDiffShowsGuestChanges: a file created, one modified and one deleted in
// a VM show as A, C and D against its image, and a fresh VM shows nothing.
func TestDiffShowsGuestChanges(t *testing.T) {
	const name = "e2e-diff"
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
	must(t, bootTimeout, "up", "--name", name, "--memory", "128M")

	type report struct {
		Changes []struct {
			Kind string   `json:"kind"`
			Path string   `json:"path"`
			What []string `json:"what"`
		} `json:"changes"`
	}
	diff := func() map[string]string {
		var rep report
		r := must(t, 2*time.Minute, "diff", name, "--json")
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("diff --json: %v: %s", err, r)
		}
		got := map[string]string{}
		for _, c := range rep.Changes {
			got[c.Path] = c.Kind
		}
		return got
	}
	if got := diff(); len(got) != 0 {
		t.Fatalf("a freshly booted VM differs from its image: %v", got)
	}
	must(t, time.Minute, "exec", name, "--", "sh", "-c",
		"echo new > /root/added && echo more >> /etc/os-release && rm /etc/hosts && echo scratch > /tmp/ignored")
	got := diff()
	want := map[string]string{
		"/root/added":     "A",
		"/etc/os-release": "C",
		"/etc/hosts":      "D",
		"/root":           "C", // gained an entry
		"/etc":            "C", // lost one
	}
	for p, k := range want {
		if got[p] != k {
			t.Errorf("%s: got %q, want %q (all: %v)", p, got[p], k, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("unexpected changes: %v", got)
	}
	// The plain output is docker diff's.
	if r := must(t, time.Minute, "diff", name); r.stdout == "" || r.stdout[:2] != "C " {
		t.Errorf("plain diff output: %q", r.stdout)
	}
}

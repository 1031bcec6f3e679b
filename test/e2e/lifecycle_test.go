package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

const bootTimeout = 10 * time.Minute

type lsItem struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Backend   string `json:"backend"`
	Arch      string `json:"arch"`
	Image     string `json:"image"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	PID       int    `json:"pid"`
	Created   string `json:"created"`
}

func ls(t *testing.T, all bool) map[string]lsItem {
	t.Helper()
	args := []string{"ls", "--json"}
	if all {
		args = append(args, "-a")
	}
	r := must(t, time.Minute, args...)
	var items []lsItem
	if err := json.Unmarshal([]byte(r.stdout), &items); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, r)
	}
	out := map[string]lsItem{}
	for _, it := range items {
		out[it.Name] = it
	}
	return out
}

// TestLifecycle is the product's main path — up, exec, ls, down, ls, rm —
// run against every backend: a backend counts only when it passes.
func TestLifecycle(t *testing.T) {
	forEachBackend(t, testLifecycle)
}

func testLifecycle(t *testing.T, be string) {
	name := "e2e-life-" + be
	up := must(t, bootTimeout, "up", "--backend", be, "--image", "minimal", "--name", name, "--memory", "256M")
	if strings.TrimSpace(up.stdout) != name {
		t.Fatalf("up printed %q, want the name", up.stdout)
	}
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })

	// Duplicate names are refused and the first VM is untouched.
	dup := mvm(t, time.Minute, "", "up", "--name", name)
	if dup.code != 1 || !strings.Contains(dup.stderr, "already exists") {
		t.Fatalf("duplicate up: %s", dup)
	}

	vmInfo := ls(t, false)[name]
	if vmInfo.State != "running" || vmInfo.Backend != be || vmInfo.Image != "minimal" || vmInfo.MemoryMiB != 256 || vmInfo.CPUs < 1 || vmInfo.PID <= 0 || vmInfo.Created == "" {
		t.Fatalf("ls after up: %+v", vmInfo)
	}

	// stdout and stderr arrive separately; the exit code passes through.
	r := mvm(t, time.Minute, "", "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("exec exit 3: %s", r)
	}
	// The guest runs the kernel the image was built from.
	r = must(t, time.Minute, "exec", name, "--", "uname", "-r")
	var info struct {
		Cached struct {
			KernelRelease string `json:"kernel_release"`
		} `json:"cached"`
	}
	ir := must(t, time.Minute, "image", "info", "minimal", "--json")
	if err := json.Unmarshal([]byte(ir.stdout), &info); err != nil || info.Cached.KernelRelease == "" {
		t.Fatalf("image info: %v\n%s", err, ir)
	}
	want := info.Cached.KernelRelease
	if be == "docker" {
		// A container shares the host's kernel.
		host, err := os.ReadFile("/proc/sys/kernel/osrelease")
		if err != nil {
			t.Fatal(err)
		}
		want = strings.TrimSpace(string(host))
	}
	if strings.TrimSpace(r.stdout) != want {
		t.Fatalf("guest uname -r = %q, want %q", r.stdout, want)
	}
	r = must(t, time.Minute, "exec", name, "--", "hostname")
	if strings.TrimSpace(r.stdout) != name {
		t.Fatalf("hostname = %q, want %q", r.stdout, name)
	}
	// stdin reaches the command with -i.
	r = mvm(t, time.Minute, "line one\nline two\n", "exec", "-i", name, "--", "cat")
	if r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Fatalf("exec -i cat: %s", r)
	}
	// console --command is the one-shot form.
	r = mvm(t, time.Minute, "", "console", name, "--command", "echo from-console; exit 4")
	if r.code != 4 || r.stdout != "from-console\n" {
		t.Fatalf("console --command: %s", r)
	}
	// The serial log shows the boot.
	r = must(t, time.Minute, "logs", name, "-n", "200")
	if !strings.Contains(r.stdout, "mvm-agent") {
		t.Fatalf("logs lack agent output:\n%s", r.stdout)
	}

	// Verbs a backend cannot do are refused with the missing capability named.
	if be == "docker" {
		r = mvm(t, time.Minute, "", "snapshot", "create", name)
		if r.code != 1 || !strings.Contains(r.stderr, "snapshot") || !strings.Contains(r.stderr, "docker") {
			t.Fatalf("snapshot on docker: %s", r)
		}
	}
	// health reports every readiness stage done; inspect shows the record
	// and which precedence level supplied each resource.
	var health struct {
		Ready  bool `json:"ready"`
		Stages []struct {
			Name string `json:"name"`
			Done bool   `json:"done"`
		} `json:"stages"`
	}
	hr := must(t, time.Minute, "health", name, "--json")
	if err := json.Unmarshal([]byte(hr.stdout), &health); err != nil || !health.Ready || len(health.Stages) < 5 {
		t.Fatalf("health --json: %v\n%s", err, hr)
	}
	for _, st := range health.Stages {
		if !st.Done {
			t.Errorf("stage %s not done on a ready VM", st.Name)
		}
	}
	var insp struct {
		Record struct {
			Name    string            `json:"name"`
			Backend string            `json:"backend"`
			Sources map[string]string `json:"sources"`
		} `json:"record"`
	}
	ins := must(t, time.Minute, "inspect", name)
	if err := json.Unmarshal([]byte(ins.stdout), &insp); err != nil || insp.Record.Name != name || insp.Record.Backend != be ||
		insp.Record.Sources["memory_mib"] != "flag" || insp.Record.Sources["backend"] != "flag" {
		t.Fatalf("inspect: %v\n%s", err, ins)
	}

	// pause/resume: a paused VM does not answer; a resumed one does.
	must(t, time.Minute, "pause", name)
	if st := ls(t, true)[name].State; st != "paused" {
		t.Fatalf("state after pause = %q", st)
	}
	must(t, time.Minute, "resume", name)
	must(t, time.Minute, "exec", name, "--", "true")

	must(t, 2*time.Minute, "down", name)
	if _, listed := ls(t, false)[name]; listed {
		t.Fatal("stopped VM listed without -a")
	}
	if st := ls(t, true)[name].State; st != "stopped" {
		t.Fatalf("state after down = %q, want stopped", st)
	}
	r = mvm(t, time.Minute, "", "exec", name, "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "stopped") {
		t.Fatalf("exec on stopped VM: %s", r)
	}
	must(t, time.Minute, "rm", name)
	if _, listed := ls(t, true)[name]; listed {
		t.Fatal("removed VM still listed")
	}
}

// TestBadInput covers errors that need no VM.
func TestBadInput(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"up", "--name", "Bad_Name"}, 1, "invalid VM name"},
		{[]string{"up", "--name", "-x"}, 1, "invalid VM name"},
		{[]string{"up", "--image", "nope"}, 1, "unknown image"},
		{[]string{"up", "--memory", "lots"}, 2, "invalid size"},
		{[]string{"exec", "ghost", "--", "true"}, 1, "no such VM"},
		{[]string{"exec", "ghost"}, 2, "needs a VM name and a command"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"ls", "--bogus"}, 2, "unknown flag"},
		{[]string{"completions"}, 2, "one shell name"},
	}
	for _, tt := range tests {
		r := mvm(t, time.Minute, "", tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("mvmctl %v: want exit %d and %q\n%s", tt.args, tt.code, tt.want, r)
		}
	}
}

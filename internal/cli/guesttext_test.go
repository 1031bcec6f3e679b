package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/vm"
)

// Guest-written text as a hostile guest would write it: an OSC 52 clipboard
// write, a screen clear (7-bit CSI and C1 CSI), DEL, a byte that is not
// UTF-8, a right-to-left override and a forged extra line.
const (
	osc52   = "\x1b]52;c;ZWNobyBwd25lZA==\a"
	hostile = "evil" + osc52 + "\x1b[2J\x1b[H" + "\u009b31m" + "\x7f" + "\xff" + "\u202egnp.exe" + "\r\nD /etc/shadow"
	// What the user sees instead of the clipboard write.
	osc52Shown = `\x1b]52;c;ZWNobyBwd25lZA==\a`
)

// checkTerminalSafe fails if out could drive a terminal: a C0 control other
// than newline and tab, ESC, DEL, a C1 control (raw byte or UTF-8), a bidi
// control, or anything that is not UTF-8.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		if c := out[i]; (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("%s: raw control byte %#02x at %d in %q", what, c, i, out)
		}
	}
	if !utf8.ValidString(out) {
		t.Fatalf("%s: not UTF-8 (raw 8-bit bytes reach the terminal): %q", what, out)
	}
	for i, r := range out {
		if (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Fatalf("%s: raw %U at %d in %q", what, r, i, out)
		}
	}
}

func lines(s string) int { return strings.Count(s, "\n") }

func TestPrintHealthEscapesGuestText(t *testing.T) {
	tests := []struct {
		name string
		h    proto.HealthResult
	}{
		{"stage name", proto.HealthResult{Stages: []proto.Stage{{Name: hostile, Done: true}}}},
		{"stage detail", proto.HealthResult{Stages: []proto.Stage{{Name: "network", Detail: hostile}}}},
		{"service name", proto.HealthResult{Services: []proto.ServiceStatus{{Name: hostile, Running: true, Pid: 7}}}},
		{"service detail", proto.HealthResult{Services: []proto.ServiceStatus{{Name: "web", Restarts: 2, Detail: hostile}}}},
		{"check name", proto.HealthResult{Checks: []proto.CheckResult{{Name: hostile, OK: true, Ran: true}}}},
		{"check output", proto.HealthResult{Checks: []proto.CheckResult{{Name: "http", Detail: "exit 1: " + hostile, Ran: true}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			printHealth(&out, "web", &tt.h, false)
			got := out.String()
			checkTerminalSafe(t, "health", got)
			if !strings.Contains(got, osc52Shown) {
				t.Errorf("the escape sequence is not shown escaped:\n%s", got)
			}
			// Header, one row, verdict: the guest's newline forged no row.
			if n := lines(got); n != 3 {
				t.Errorf("%d lines, want 3:\n%s", n, got)
			}
		})
	}
}

func TestPrintHealthKeepsPlainText(t *testing.T) {
	h := &proto.HealthResult{
		Ready:  true,
		Stages: []proto.Stage{{Name: "network", Done: true, Detail: "10.0.0.2 café 日本"}},
		Checks: []proto.CheckResult{{Name: "http", OK: true, Detail: "ok", DurationMS: 3, Ran: true}},
	}
	var out bytes.Buffer
	printHealth(&out, "web", h, true)
	for _, want := range []string{"10.0.0.2 café 日本", "http", "ok (3ms)", "web: healthy\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
}

func TestPrintDiffEscapesGuestPaths(t *testing.T) {
	tests := []struct {
		name      string
		rep       vm.DiffReport
		long      bool
		out, warn int // lines
	}{
		{"added path", vm.DiffReport{Changes: []vm.Change{{Kind: vm.ChangeAdded, Path: "/srv/" + hostile}}}, false, 1, 0},
		{"changed path, long", vm.DiffReport{Changes: []vm.Change{{Kind: vm.ChangeChanged, Path: "/etc/" + hostile, What: []string{"link", hostile}}}}, true, 1, 0},
		{"deleted path", vm.DiffReport{Changes: []vm.Change{{Kind: vm.ChangeDeleted, Path: hostile}}}, false, 1, 0},
		{"unreadable path", vm.DiffReport{Unreadable: []string{"/root/" + hostile}}, false, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, warn bytes.Buffer
			printDiff(&out, &warn, &tt.rep, tt.long)
			checkTerminalSafe(t, "diff stdout", out.String())
			checkTerminalSafe(t, "diff stderr", warn.String())
			if !strings.Contains(out.String()+warn.String(), osc52Shown) {
				t.Errorf("the escape sequence is not shown escaped:\n%s%s", out.String(), warn.String())
			}
			if lines(out.String()) != tt.out || lines(warn.String()) != tt.warn {
				t.Errorf("forged lines: stdout %q, stderr %q", out.String(), warn.String())
			}
		})
	}
}

func TestPrintDiffKeepsPlainPaths(t *testing.T) {
	rep := &vm.DiffReport{Changes: []vm.Change{
		{Kind: vm.ChangeAdded, Path: "/srv/résumé 日本.txt"},
		{Kind: vm.ChangeChanged, Path: "/etc/hosts", What: []string{"content", "mode"}},
	}}
	var out, warn bytes.Buffer
	printDiff(&out, &warn, rep, true)
	if want := "A /srv/résumé 日本.txt\nC /etc/hosts (content, mode)\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// hostileState makes a state dir holding VM "web", failed with a reason
// taken from the guest (as `up` records the last console lines), and points
// mvmctl at it.
func hostileState(t *testing.T) {
	t.Helper()
	state := t.TempDir()
	t.Setenv("MVM_STATE_DIR", state)
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	t.Setenv("MVM_CONFIG_DIR", t.TempDir())
	dir := filepath.Join(state, "vms", "web")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := store.Record{Name: "web", State: "failed", Image: "alpine", CPUs: 1, MemoryMiB: 256,
		Reason: hostileReason,
		Dir:    dir, Created: time.Now()}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vm.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// hostileReason is the failure reason of hostileState's VM.
const hostileReason = "VM web exited during boot; last console lines:\n" + hostile + "\u2028\u2029"

// holdsString reports whether decoded JSON v holds the string s anywhere.
func holdsString(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return v == s
	case []any:
		for _, e := range v {
			if holdsString(e, s) {
				return true
			}
		}
	case map[string]any:
		for _, e := range v {
			if holdsString(e, s) {
				return true
			}
		}
	}
	return false
}

func runCtx(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(ctx, args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// Text output built from guest-influenced records and errors reaches the
// terminal escaped: the error line printed by Main (the agent's and the
// guest's words are wrapped inside errors), the ls table and events.
func TestGuestTextEscapedInCommandOutput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		// in stdout or stderr
		want string
	}{
		{"health error", []string{"health", "web"}, 1, "mvmctl: cannot check health of"},
		{"exec error", []string{"exec", "web", "--", "true"}, 1, "mvmctl: cannot exec"},
		{"ls table reason", []string{"ls", "-a"}, 0, "failed (VM web exited during boot"},
		{"events reason", []string{"events", "--current", "--interval", "50ms"}, 0, "web created, failed ("},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostileState(t)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			code, out, errs := runCtx(ctx, tt.args...)
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Fatalf("exit %d (want %d), want %q\nstdout: %q\nstderr: %q", code, tt.code, tt.want, out, errs)
			}
			checkTerminalSafe(t, "stdout", out)
			checkTerminalSafe(t, "stderr", errs)
			if !strings.Contains(out+errs, osc52Shown) {
				t.Errorf("the escape sequence is not shown escaped:\nstdout: %s\nstderr: %s", out, errs)
			}
		})
	}
}

// The final error line is escaped as a whole but keeps its newlines: some
// errors are multi-line by design (console lines, backend diagnostics).
func TestMainErrorKeepsLines(t *testing.T) {
	hostileState(t)
	_, _, errs := runCtx(context.Background(), "health", "web")
	if !strings.Contains(errs, "last console lines:\nevil") {
		t.Errorf("the error lost its line break: %q", errs)
	}
}

// encoding/json already escapes C0 controls (ESC included) and U+2028/9:
// JSON output is left as is, and holds no raw ESC.
func TestJSONOutputHoldsNoRawControls(t *testing.T) {
	for _, args := range [][]string{{"ls", "-a", "--json"}, {"inspect", "web"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			hostileState(t)
			code, out, errs := runCtx(context.Background(), args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			for i := 0; i < len(out); i++ {
				if c := out[i]; c < 0x20 && c != '\n' {
					t.Fatalf("raw control byte %#02x at %d in %q", c, i, out)
				}
			}
			if strings.ContainsAny(out, "\u2028\u2029") {
				t.Errorf("raw U+2028/U+2029 in %q", out)
			}
			if !strings.Contains(out, `\u001b]52;c;ZWNobyBwd25lZA==\u0007`) {
				t.Errorf("the reason is not in the JSON, escaped: %s", out)
			}
			// And scripts still get exactly what was recorded (the byte
			// that is not UTF-8 was U+FFFD once stored as JSON).
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatal(err)
			}
			want := strings.ToValidUTF8(hostileReason, "\ufffd")
			if !holdsString(v, want) {
				t.Errorf("no field holds the recorded reason %q: %s", want, out)
			}
		})
	}
}

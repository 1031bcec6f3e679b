package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/audit"
	"github.com/mvm-dev/mvm/internal/security"
	"github.com/mvm-dev/mvm/internal/store"
)

// securityEnv points mvmctl at fresh roots and returns them.
func securityEnv(t *testing.T) (state, config string) {
	t.Helper()
	state, config = t.TempDir(), t.TempDir()
	t.Setenv("MVM_STATE_DIR", state)
	t.Setenv("MVM_CONFIG_DIR", config)
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	t.Setenv("MVM_SHARE_DIR", t.TempDir())
	return state, config
}

func TestSecurityStatus(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		setup func(t *testing.T, state, config string)
		code  int
		out   []string // in stdout
		err   string   // in stderr
	}{
		{name: "fresh host passes", args: []string{"security", "status"},
			setup: func(*testing.T, string, string) {},
			out:   []string{"STATUS", "CHECK", "DETAIL", "FIX", "agent host key", "audit trail", "firecracker jailer/seccomp", "0 fail"}},
		{name: "a host key others can read fails", args: []string{"security", "status"},
			setup: func(t *testing.T, _, config string) {
				if _, err := auth.LoadOrCreateHostKey(config); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(auth.HostKeyPath(config), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			code: 1, out: []string{"FAIL", "agent host key", "chmod 600 "}, err: "1 of"},
		{name: "json: same fields, exit 1 on failure", args: []string{"security", "status", "--json"},
			setup: func(t *testing.T, state, _ string) {
				if err := os.Chmod(state, 0o777); err != nil {
					t.Fatal(err)
				}
			},
			code: 1, out: []string{`"status": "fail"`, `"check": "permissions"`, `"detail":`, `"fix":`, `"ok": false`}},
		{name: "guest-influenced text is escaped", args: []string{"security", "status"},
			setup: func(t *testing.T, state, _ string) {
				st := store.New(filepath.Join(state, "vms"))
				if err := st.Create(&store.Record{Name: "web", State: "stopped", Image: "evil\x1b]52;c;eA==\a\tx", Created: time.Now()}); err != nil {
					t.Fatal(err)
				}
			},
			out: []string{`evil\x1b]52;c;eA==\a\tx`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, config := securityEnv(t)
			tt.setup(t, state, config)
			code, out, errs := mvmctl(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout does not hold %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errs, tt.err) {
				t.Errorf("stderr %q does not hold %q", errs, tt.err)
			}
			if strings.ContainsAny(out, "\x1b\a") {
				t.Errorf("raw control characters on stdout: %q", out)
			}
			// Read-only: no host key made, no audit record written.
			if tt.code == 0 {
				if _, err := os.Stat(auth.HostKeyPath(config)); err == nil {
					t.Error("security status created a host key")
				}
			}
			if files, _ := audit.Files(audit.Dir(state)); len(files) != 0 {
				t.Errorf("security status wrote the audit trail: %v", files)
			}
		})
	}
}

func TestSecurityStatusJSONMatchesTable(t *testing.T) {
	securityEnv(t)
	code, out, errs := mvmctl(t, "security", "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	var rep security.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !rep.OK || len(rep.Checks) == 0 {
		t.Fatalf("%+v", rep)
	}
	_, table, _ := mvmctl(t, "security", "status")
	for _, c := range rep.Checks {
		if !strings.Contains(table, c.Check) {
			t.Errorf("the table has no row for %q", c.Check)
		}
	}
}

package security

import (
	"slices"
	"testing"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name     string
		statuses []Status
		want     int
	}{
		{"no checks", nil, 0},
		{"all pass", []Status{Pass, Pass}, 0},
		{"info only", []Status{Info}, 0},
		{"warnings do not fail", []Status{Pass, Warn, Warn, Info}, 0},
		{"one failure fails", []Status{Pass, Warn, Fail, Info}, 1},
		{"many failures exit 1", []Status{Fail, Fail}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Report
			for _, s := range tt.statuses {
				r.Checks = append(r.Checks, Check{Status: s, Check: "x", Detail: "y"})
			}
			if got := r.ExitCode(); got != tt.want {
				t.Errorf("ExitCode() = %d, want %d", got, tt.want)
			}
			if got := r.Count(Fail); (got > 0) != (tt.want == 1) {
				t.Errorf("Count(Fail) = %d with exit code %d", got, tt.want)
			}
		})
	}
}

// Run on a fresh host: every check reports, none fails, and a failure
// anywhere makes the report fail.
func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, e *Env)
		wantOK bool
	}{
		{"fresh host", func(*testing.T, *Env) {}, true},
		{"a QEMU VM running as root without seccomp", func(t *testing.T, e *Env) {
			addQEMUVM(t, e, qemuVMSpec{name: "web", state: "running", accel: "tcg", pid: 99, status: procStatusText(0, 0, 0, 0, 0x1ff)})
		}, false},
		{"a group-writable state directory", func(t *testing.T, e *Env) { mkdir(t, e.Dirs.State, 0o770) }, false},
		{"warnings only", func(t *testing.T, e *Env) {
			e.Statfs = func(string) (int64, error) { return 0xef53, nil } // ext4
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			tt.setup(t, e)
			r := Run(e)
			if r.OK != tt.wantOK || (r.ExitCode() == 0) != tt.wantOK {
				t.Fatalf("OK %v exit %d, want OK %v: %+v", r.OK, r.ExitCode(), tt.wantOK, r.Checks)
			}
			for _, c := range r.Checks {
				if c.Check == "" || c.Detail == "" || !slices.Contains([]Status{Pass, Info, Warn, Fail}, c.Status) {
					t.Errorf("incomplete check %+v", c)
				}
				if (c.Status == Warn || c.Status == Fail) && c.Fix == "" {
					t.Errorf("%s without a fix: %+v", c.Status, c)
				}
			}
			for _, name := range []string{"agent host key", "permissions", "qemu confinement (new VMs)", "docker backend",
				"firecracker jailer/seccomp", "secrets", "guest RAM on tmpfs", "audit trail"} {
				if len(only(r.Checks, name)) == 0 {
					t.Errorf("no %q check in %+v", name, r.Checks)
				}
			}
		})
	}
}

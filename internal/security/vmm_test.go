package security

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend/qemu"
)

func TestReadProcStatus(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    procStatus
		wantErr string
	}{
		{name: "confined", status: procStatusText(7173741, 7173741, 2, 1, 0),
			want: procStatus{UID: [4]int{7173741, 7173741, 7173741, 7173741}, GID: [4]int{7173741, 7173741, 7173741, 7173741}, Seccomp: 2, NoNewPrivs: 1}},
		{name: "root", status: procStatusText(0, 0, 0, 0, 0x1ffffffffff),
			want: procStatus{Seccomp: 0, NoNewPrivs: 0, CapEff: 0x1ffffffffff}},
		{name: "old kernel without Seccomp and NoNewPrivs", status: "Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\n",
			want: procStatus{UID: [4]int{1, 1, 1, 1}, GID: [4]int{2, 2, 2, 2}, Seccomp: -1, NoNewPrivs: -1}},
		{name: "no Uid", status: "Gid:\t2\t2\t2\t2\n", wantErr: "no Uid or Gid"},
		{name: "short Uid", status: "Uid:\t1\t1\nGid:\t2\t2\t2\t2\n", wantErr: "want 4 ids"},
		{name: "bad Seccomp", status: "Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nSeccomp:\tfilter\n", wantErr: "Seccomp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeProc(t, root, 7, 1, tt.status)
			got, err := readProcStatus(root, 7)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestProcStartTime(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{name: "comm with spaces and parentheses", stat: "12 (a) b)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 0 0\n", want: 987654},
		{name: "zombie", stat: "12 (q) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 5 0\n", wantErr: true},
		{name: "short", stat: "12 (q) S 1 2\n", wantErr: true},
		{name: "no comm", stat: "12 q S\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			mkdir(t, filepath.Join(root, "12"), 0o755)
			write(t, filepath.Join(root, "12", "stat"), tt.stat, 0o644)
			got, err := procStartTime(root, 12)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := procStartTime(t.TempDir(), 12); err == nil {
		t.Error("no process: no error")
	}
}

func TestConfinement(t *testing.T) {
	const (
		runAs   = `{"sandbox":"on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny","runas":"7173741:7173741"}`
		deny    = `{"sandbox":"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}`
		noSecc  = `{"runas":"7173741:7173741","notes":["no seccomp sandbox: qemu: -sandbox on: There is no option group 'sandbox'"]}`
		userNoS = `{"notes":["no seccomp sandbox: seccomp is not supported by the kernel"]}`
	)
	tests := []struct {
		name    string
		euid    int
		confine string
		status  string
		want    Status
		say     []string
	}{
		{"root mvmctl, QEMU dropped to its uid under seccomp", 0, runAs, procStatusText(7173741, 7173741, 2, 1, 0),
			Pass, []string{"seccomp filter (mode 2)", "uid 7173741", "no_new_privs 1", "no capabilities", "-runas 7173741:7173741"}},
		{"user mvmctl, QEMU under seccomp as the user", 1000, deny, procStatusText(1000, 1000, 2, 1, 0),
			Pass, []string{"uid 1000", "-sandbox on,obsolete=deny,elevateprivileges=deny"}},
		{"root without seccomp fails", 0, "", procStatusText(0, 0, 0, 0, 0x1ff),
			Fail, []string{"no seccomp filter (mode 0)", "(root)", "a QEMU escape is root on the host", "did not confine QEMU yet"}},
		{"root under seccomp warns", 0, deny, procStatusText(0, 0, 2, 1, 0x1ff),
			Warn, []string{"runs as root", "capabilities 0x1ff"}},
		{"saved uid 0 counts as root", 0, runAs, "Uid:\t5\t5\t0\t5\nGid:\t5\t5\t5\t5\nSeccomp:\t0\nNoNewPrivs:\t0\n",
			Fail, []string{"(root)"}},
		{"dropped but without seccomp warns, with the recorded reason", 0, noSecc, procStatusText(7173741, 7173741, 0, 0, 0),
			Warn, []string{"no seccomp filter", "There is no option group 'sandbox'"}},
		{"user without seccomp warns", 1000, userNoS, procStatusText(1000, 1000, 0, 0, 0),
			Warn, []string{"a QEMU escape has your uid", "seccomp is not supported by the kernel"}},
		{"seccomp without no_new_privs warns", 1000, deny, procStatusText(1000, 1000, 2, 0, 0),
			Warn, []string{"no_new_privs is not set"}},
		{"runs as another uid than asked", 0, runAs, procStatusText(65534, 65534, 2, 1, 0),
			Pass, []string{"but runs as uid 65534"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			e.Euid = tt.euid
			addQEMUVM(t, e, qemuVMSpec{name: "web", state: "running", accel: "tcg", confine: tt.confine, pid: 321, status: tt.status})
			c := wantOne(t, checkConfinement(e), tt.want, tt.say...)
			if c.Check != "vmm confinement: web" || !strings.Contains(c.Detail, "QEMU pid 321") {
				t.Errorf("%+v", c)
			}
			if tt.want == Fail && !strings.Contains(c.Fix, "mvmctl restart web") {
				t.Errorf("fix %q", c.Fix)
			}
		})
	}
}

// Only VMMs that run are checked: a stopped VM, a VM without pids.json and
// a recycled pid (another start time) give no finding.
func TestConfinementOnlyRunningVMMs(t *testing.T) {
	e := testEnv(t)
	bad := procStatusText(0, 0, 0, 0, 0x1ff)
	addQEMUVM(t, e, qemuVMSpec{name: "never", state: "stopped", accel: "tcg"})
	addQEMUVM(t, e, qemuVMSpec{name: "reused", state: "running", accel: "tcg", pid: 50, status: bad, stale: true})
	addQEMUVM(t, e, qemuVMSpec{name: "live", state: "running", accel: "tcg", pid: 51, status: bad})
	got := checkConfinement(e)
	if len(got) != 1 || got[0].Check != "vmm confinement: live" {
		t.Fatalf("%+v", got)
	}
}

func TestConfinementUnreadableStatus(t *testing.T) {
	e := testEnv(t)
	addQEMUVM(t, e, qemuVMSpec{name: "web", state: "running", accel: "tcg", pid: 60, status: "garbage\n"})
	wantOne(t, checkConfinement(e), Warn, "cannot read its status")
}

func TestAccelerator(t *testing.T) {
	tests := []struct {
		name   string
		spec   qemuVMSpec
		status []Status
		want   string
	}{
		{"tcg", qemuVMSpec{accel: "tcg", state: "stopped", confine: `{}`}, []Status{Info}, "web: tcg (stopped); TCG is software emulation"},
		{"kvm with the sandbox recorded", qemuVMSpec{accel: "kvm", state: "stopped", confine: `{"sandbox":"on"}`}, []Status{Info}, "web: kvm (stopped)"},
		{"kvm, running under seccomp", qemuVMSpec{accel: "kvm", state: "running", confine: `{}`, pid: 9, status: procStatusText(1, 1, 2, 1, 0)},
			[]Status{Info}, "web: kvm (running)"},
		{"kvm without the sandbox", qemuVMSpec{accel: "kvm", state: "stopped", confine: `{"notes":["no seccomp"]}`}, []Status{Warn}, "KVM without QEMU's seccomp sandbox"},
		{"kvm, running without seccomp", qemuVMSpec{accel: "kvm", state: "running", confine: `{"sandbox":"on"}`, pid: 9, status: procStatusText(1, 1, 0, 0, 0)},
			[]Status{Warn}, "unfiltered QEMU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			tt.spec.name = "web"
			addQEMUVM(t, e, tt.spec)
			got := checkAccelerator(e)
			if s := statuses(got); len(s) != len(tt.status) || s[0] != tt.status[0] {
				t.Fatalf("statuses %v, want %v: %+v", s, tt.status, got)
			}
			if !strings.Contains(got[0].Detail, tt.want) {
				t.Errorf("%q does not say %q", got[0].Detail, tt.want)
			}
		})
	}
	// A VM without a backend record (never started) says nothing.
	e := testEnv(t)
	addVM(t, e, recordOf("new", "creating", "qemu"))
	if got := checkAccelerator(e); len(got) != 0 {
		t.Errorf("%+v", got)
	}
}

func TestQEMUHost(t *testing.T) {
	tests := []struct {
		name   string
		euid   int
		host   *QEMUHost
		status []Status
		want   string
	}{
		{"no QEMU", 0, nil, []Status{Info}, "QEMU is not available (qemu-system-x86_64 not found)"},
		{"root: seccomp and -runas", 0, &QEMUHost{Accel: "tcg", AccelReason: "no /dev/kvm",
			Confine: qemu.Confinement{Sandbox: "on", RunAs: "7173741:7173741"}}, []Status{Pass, Info}, "as uid:gid 7173741:7173741 (-runas), not root"},
		{"user: seccomp", 1000, &QEMUHost{Accel: "kvm", AccelReason: "ok",
			Confine: qemu.Confinement{Sandbox: "on"}}, []Status{Pass, Info}, "as your uid 1000"},
		{"no seccomp", 1000, &QEMUHost{Accel: "tcg", Confine: qemu.Confinement{Notes: []string{"no seccomp sandbox: not built in"}}},
			[]Status{Warn, Info}, "without a seccomp filter, as your uid 1000; no seccomp sandbox: not built in"},
		{"root without -runas", 0, &QEMUHost{Accel: "tcg", Confine: qemu.Confinement{}}, []Status{Fail, Info}, "QEMU would run as root without a seccomp filter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			e.Euid = tt.euid
			e.Host = Host{QEMU: tt.host, QEMUMissing: "qemu-system-x86_64 not found"}
			got := checkQEMUHost(e)
			if s := statuses(got); len(s) != len(tt.status) || s[0] != tt.status[0] {
				t.Fatalf("statuses %v, want %v: %+v", s, tt.status, got)
			}
			if !strings.Contains(got[0].Detail, tt.want) {
				t.Errorf("%q does not say %q", got[0].Detail, tt.want)
			}
			if tt.host != nil {
				accel := got[1].Detail
				if (tt.host.Accel == "tcg") != strings.Contains(accel, "TCG software emulation") {
					t.Errorf("accelerator: %q", accel)
				}
			}
		})
	}
}

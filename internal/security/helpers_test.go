package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
)

// testEnv is an Env over fresh temporary roots (0700, like mvmctl makes
// them), an empty fake /proc and a /dev/shm that is a tmpfs.
func testEnv(t *testing.T) *Env {
	t.Helper()
	base := t.TempDir()
	d := paths.Dirs{
		Cache:  filepath.Join(base, "cache"),
		Config: filepath.Join(base, "config"),
		State:  filepath.Join(base, "state"),
		Share:  filepath.Join(base, "share"),
	}
	for _, p := range []string{d.Cache, d.Config, d.State, d.Share, d.VMsDir()} {
		mkdir(t, p, 0o700)
	}
	proc := filepath.Join(base, "proc")
	mkdir(t, proc, 0o755)
	return &Env{Dirs: d, Euid: os.Geteuid(), ProcRoot: proc, ShmDir: filepath.Join(base, "shm"),
		Statfs: func(string) (int64, error) { return tmpfsMagic, nil }}
}

func mkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// addVM creates a VM directory with its record (0600) and adds the record
// to e.VMs.
func addVM(t *testing.T, e *Env, rec store.Record) *store.Record {
	t.Helper()
	rec.Dir = filepath.Join(e.Dirs.VMsDir(), rec.Name)
	if rec.Created.IsZero() {
		rec.Created = time.Now()
	}
	mkdir(t, rec.Dir, 0o700)
	write(t, filepath.Join(rec.Dir, recordFile), "{}\n", 0o600)
	r := rec
	e.VMs = append(e.VMs, &r)
	return &r
}

// qemuVMSpec describes a QEMU VM's backend record and VMM process.
type qemuVMSpec struct {
	name, state string
	accel       string
	confine     string // JSON of launch.Confine; "" leaves it out
	memPath     string
	memShare    bool
	pid         int // 0: no VMM recorded
	status      string
	// stale: /proc holds another process under the pid (start time
	// differs), as after the VMM exited and its pid was reused.
	stale bool
}

const vmmStart = 4242

func addQEMUVM(t *testing.T, e *Env, s qemuVMSpec) *store.Record {
	t.Helper()
	rec := addVM(t, e, store.Record{Name: s.name, State: s.state, Backend: "qemu", Image: "minimal"})
	launch := fmt.Sprintf(`{"KVM":%v,"MemPath":%q,"MemShare":%v`, s.accel == "kvm", s.memPath, s.memShare)
	if s.confine != "" {
		launch += `,"Confine":` + s.confine
	}
	launch += "}"
	write(t, filepath.Join(rec.Dir, "backend.json"), fmt.Sprintf(`{"backend":"qemu","transport":"serial","accel":%q,"argv":["qemu"],"launch":%s}`, s.accel, launch), 0o600)
	if s.pid > 0 {
		write(t, filepath.Join(rec.Dir, "pids.json"), fmt.Sprintf(`{"supervisor":{"pid":1,"start":1},"vmm":{"pid":%d,"start":%d}}`, s.pid, vmmStart), 0o600)
		start := uint64(vmmStart)
		if s.stale {
			start++
		}
		writeProc(t, e.ProcRoot, s.pid, start, s.status)
	}
	return rec
}

// writeProc fakes /proc/<pid>/stat (with start time start) and status.
func writeProc(t *testing.T, root string, pid int, start uint64, status string) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	mkdir(t, dir, 0o755)
	// Fields after comm: state, then 18 fields, then starttime (22nd).
	stat := fmt.Sprintf("%d (qemu-system-x86 (x)) S %s %d 0 0\n", pid, strings.TrimSpace(strings.Repeat("0 ", 18)), start)
	write(t, filepath.Join(dir, "stat"), stat, 0o644)
	write(t, filepath.Join(dir, "status"), status, 0o644)
}

// procStatusText is a /proc/<pid>/status with the fields the checks read.
func procStatusText(uid, gid, seccomp, nnp int, capEff uint64) string {
	return fmt.Sprintf("Name:\tqemu-system-x86\nState:\tS (sleeping)\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\nCapEff:\t%016x\nNoNewPrivs:\t%d\nSeccomp:\t%d\nSeccomp_filters:\t1\n",
		uid, uid, uid, uid, gid, gid, gid, gid, capEff, nnp, seccomp)
}

// only returns the checks named name (or starting with it and ": ").
func only(cs []Check, name string) []Check {
	var out []Check
	for _, c := range cs {
		if c.Check == name || strings.HasPrefix(c.Check, name+": ") {
			out = append(out, c)
		}
	}
	return out
}

func statuses(cs []Check) []Status {
	var out []Status
	for _, c := range cs {
		out = append(out, c.Status)
	}
	return out
}

// wantOne asserts cs is one check with status s whose detail holds every
// string of want.
func wantOne(t *testing.T, cs []Check, s Status, want ...string) Check {
	t.Helper()
	if len(cs) != 1 {
		t.Fatalf("got %d checks, want 1: %+v", len(cs), cs)
	}
	c := cs[0]
	if c.Status != s {
		t.Errorf("status %s, want %s: %+v", c.Status, s, c)
	}
	for _, w := range want {
		if !strings.Contains(c.Detail, w) {
			t.Errorf("detail %q does not say %q", c.Detail, w)
		}
	}
	if (c.Status == Warn || c.Status == Fail) && c.Fix == "" {
		t.Errorf("%s without a fix: %+v", c.Status, c)
	}
	return c
}

func recordOf(name, state, backend string) store.Record {
	return store.Record{Name: name, State: state, Backend: backend, Image: "minimal"}
}

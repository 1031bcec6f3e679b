package security

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mvm-dev/mvm/internal/store"
)

// fcVM lays out a Firecracker VM dir and a fake /proc entry for its pid.
func fcVM(t *testing.T, proc string, pid, seccomp int, args string, root string, standIn bool) *store.Record {
	t.Helper()
	dir := t.TempDir()
	si := ""
	if standIn {
		si = `,"stand_in":true`
	}
	os.WriteFile(filepath.Join(dir, "backend.json"), []byte(`{"backend":"firecracker"`+si+`}`), 0o600)
	os.WriteFile(filepath.Join(dir, "pids.json"), []byte(`{"vmm":{"pid":`+strconv.Itoa(pid)+`}}`), 0o600)
	p := filepath.Join(proc, strconv.Itoa(pid))
	os.MkdirAll(p, 0o755)
	os.WriteFile(filepath.Join(p, "status"), []byte("Name:\tfirecracker\nUid:\t0\t123\t123\t123\nSeccomp:\t"+strconv.Itoa(seccomp)+"\n"), 0o644)
	os.WriteFile(filepath.Join(p, "cmdline"), []byte("firecracker\x00--api-sock\x00fc.sock"+args), 0o644)
	os.Symlink(root, filepath.Join(p, "root"))
	return &store.Record{Name: "vm" + strconv.Itoa(pid), Backend: "firecracker", State: "running", Dir: dir}
}

func TestFirecrackerVMs(t *testing.T) {
	proc := t.TempDir()
	tests := []struct {
		rec  *store.Record
		want []Status
	}{
		{fcVM(t, proc, 1001, 2, "", "/srv/jailer/firecracker/x/root", false), []Status{Pass, Pass}},
		{fcVM(t, proc, 1002, 2, "", "/", false), []Status{Pass, Warn}},
		{fcVM(t, proc, 1003, 0, "\x00--no-seccomp", "/", false), []Status{Fail, Warn}},
		{fcVM(t, proc, 1004, 0, "", "/", true), []Status{Info}},
	}
	for _, tt := range tests {
		cs := checkFirecracker(&Env{Host: Host{Firecracker: true}, VMs: []*store.Record{tt.rec}, ProcRoot: proc})
		if len(cs) != len(tt.want) {
			t.Fatalf("%s: %+v", tt.rec.Name, cs)
		}
		for i, c := range cs {
			if c.Status != tt.want[i] {
				t.Errorf("%s: check %d = %+v, want %s", tt.rec.Name, i, c, tt.want[i])
			}
		}
	}
}

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFirecracker drives one VM through the firecracker backend — against
// the stand-in VMM unless MVM_E2E_FIRECRACKER=real — beyond what the
// conformance suites ask: it runs on hybrid vsock, survives down and
// start on its own disk, restores from a snapshot into a clone, and
// leaves no process behind.
func TestFirecracker(t *testing.T) {
	if strings.Contains(","+os.Getenv("MVM_E2E_SKIP")+",", ",firecracker,") {
		t.Skip("backend firecracker listed in MVM_E2E_SKIP")
	}
	name := "e2e-fc"
	must(t, bootTimeout, "up", "--backend", "firecracker", "--image", "minimal", "--name", name, "--memory", "256M")
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })

	var insp struct {
		Record struct {
			Dir string `json:"dir"`
		} `json:"record"`
		Backend map[string]any `json:"backend"`
	}
	ins := must(t, time.Minute, "inspect", name)
	if err := json.Unmarshal([]byte(ins.stdout), &insp); err != nil || insp.Backend["transport"] != "hybrid-vsock" {
		t.Fatalf("inspect: %v\n%s", err, ins)
	}
	dir := insp.Record.Dir
	if dir == "" {
		t.Fatalf("inspect has no VM dir:\n%s", ins)
	}
	// As root, with a jailer, the VM runs in the jailer's layout.
	if os.Geteuid() == 0 && insp.Backend["jail"] == nil {
		t.Fatalf("root VM not jailed (%v):\n%s", insp.Backend["unjailed"], ins)
	}
	// A file written before down is there after start: the VM keeps its disk.
	must(t, time.Minute, "exec", name, "--", "sh", "-c", "echo kept > /root/marker && sync")
	must(t, 2*time.Minute, "down", name)
	if st := ls(t, true)[name].State; st != "stopped" {
		t.Fatalf("state after down = %q", st)
	}
	for _, f := range []string{"fc.sock", "v.sock"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s left after down", f)
		}
	}
	must(t, bootTimeout, "start", name)
	r := must(t, time.Minute, "exec", name, "--", "cat", "/root/marker")
	if strings.TrimSpace(r.stdout) != "kept" {
		t.Fatalf("marker after start = %q", r.stdout)
	}
	// A snapshot restores into clones with their own name, disk and vsock
	// socket; the source keeps running (its agent reconnects after the
	// vsock reset).
	snap := "e2e-fc-snap"
	must(t, 2*time.Minute, "snapshot", "create", name, snap)
	t.Cleanup(func() { mvm(t, time.Minute, "", "snapshot", "rm", snap) })
	clone := "e2e-fc-clone"
	must(t, bootTimeout, "up", "--from-snapshot", snap, "--name", clone)
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", clone) })
	r = must(t, time.Minute, "exec", clone, "--", "sh", "-c", "hostname; cat /root/marker; echo clone > /root/marker; sync")
	if r.stdout != clone+"\nkept\n" {
		t.Fatalf("clone sees %q", r.stdout)
	}
	r = must(t, time.Minute, "exec", name, "--", "cat", "/root/marker")
	if strings.TrimSpace(r.stdout) != "kept" {
		t.Fatalf("source sees %q after the clone wrote", r.stdout)
	}
	// The clone's writes are on its own disk: a cold start keeps them.
	must(t, 2*time.Minute, "down", clone)
	must(t, bootTimeout, "start", clone)
	r = must(t, time.Minute, "exec", clone, "--", "cat", "/root/marker")
	if strings.TrimSpace(r.stdout) != "clone" {
		t.Fatalf("clone after start sees %q", r.stdout)
	}
	must(t, time.Minute, "rm", "-f", clone)

	pids := []int{ls(t, false)[name].PID}
	// Under the stand-in, the QEMU that runs the guest must go too.
	var guest struct {
		VMM struct {
			Pid int `json:"pid"`
		} `json:"vmm"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "standin", "pids.json")); err == nil && json.Unmarshal(b, &guest) == nil {
		pids = append(pids, guest.VMM.Pid)
	}
	must(t, time.Minute, "rm", "-f", name)
	for _, pid := range pids {
		if pid <= 0 {
			t.Fatalf("no pid recorded: %v", pids)
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			t.Fatalf("pid %d survives rm", pid)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("VM dir %s left after rm", dir)
	}
}

package supervisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// droppingVMM is a VMM that, like QEMU with -runas, changes its user after
// it started, which clears its parent-death signal.
func droppingVMM(t *testing.T) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the VMM under test switches user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	return []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sleep", "60"}
}

// launchDropped launches argv and returns the supervisor's pid and the
// VMM once it runs as its new user.
func launchDropped(t *testing.T, dir string, argv []string, guard bool) (int, Proc) {
	t.Helper()
	pid, err := Launch(context.Background(), dir, Config{Argv: argv, VMMLog: filepath.Join(dir, "vmm.log"), VMMGuard: guard})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := ReadPids(dir)
		if err == nil && p.VMM.Pid != 0 {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.VMM.Pid) + "/status")
			if strings.Contains(string(b), "\nUid:\t65534\t") {
				t.Cleanup(func() { p.VMM.Signal(syscall.SIGKILL) })
				return pid, p.VMM
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vmm never switched user: %+v %v", p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitGone(t *testing.T, p Proc, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestGuardKillsDroppedVMMWithSupervisor: a VMM that switched user dies
// with its killed supervisor all the same.
func TestGuardKillsDroppedVMMWithSupervisor(t *testing.T) {
	argv := droppingVMM(t)

	// Without a guard it would not: the kernel cleared its death signal.
	sup, vmm := launchDropped(t, t.TempDir(), argv, false)
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if waitGone(t, vmm, 2*time.Second) {
		t.Fatal("test is void: the switched VMM died with its supervisor without a guard")
	}
	vmm.Signal(syscall.SIGKILL)

	dir := t.TempDir()
	sup, vmm = launchDropped(t, dir, argv, true)
	guard := guardPid(t, dir)
	// A stray signal to the guard while the supervisor runs changes nothing.
	if err := guard.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if !vmm.Alive() {
		t.Fatal("a SIGTERM to the guard killed the VMM while the supervisor runs")
	}
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(t, vmm, 5*time.Second) {
		t.Fatal("the VMM outlived its killed supervisor by 5s")
	}
	if !waitGone(t, guard, 5*time.Second) {
		t.Error("the guard outlived the VMM")
	}
}

// TestGuardExitsWithVMM: a VMM that exits takes its guard along, and the
// supervisor records the exit as usual.
func TestGuardExitsWithVMM(t *testing.T) {
	argv := droppingVMM(t)
	dir := t.TempDir()
	_, vmm := launchDropped(t, dir, argv, true)
	guard := guardPid(t, dir)
	if err := vmm.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), 10*time.Second)
	if ex, err := ReadExit(dir); err != nil || ex.Signal == "" {
		t.Errorf("exit = %+v, %v", ex, err)
	}
	if !waitGone(t, guard, 5*time.Second) {
		t.Error("the guard outlived the VMM")
	}
}

var guardRE = regexp.MustCompile(`vmm guard started"? pid=(\d+)`)

// guardPid reads the guard from the supervisor log.
func guardPid(t *testing.T, dir string) Proc {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, LogFile))
		if m := guardRE.FindSubmatch(b); m != nil {
			pid, _ := strconv.Atoi(string(m[1]))
			p, err := ReadProc(pid)
			if err != nil {
				t.Fatalf("guard %d: %v", pid, err)
			}
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("no guard in the supervisor log:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

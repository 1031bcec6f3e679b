package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vmState is the part of `ls -a --json` the drills check.
type vmState struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	PID    int    `json:"pid"`
	Dir    string `json:"dir"`
}

func lsAll(t *testing.T) map[string]vmState {
	t.Helper()
	r := must(t, time.Minute, "ls", "-a", "--json")
	var items []vmState
	if err := json.Unmarshal([]byte(r.stdout), &items); err != nil {
		t.Fatalf("ls -a --json: %v\n%s", err, r)
	}
	out := map[string]vmState{}
	for _, it := range items {
		out[it.Name] = it
	}
	return out
}

// pids reads the supervisor and VMM pids from `inspect`.
func pids(t *testing.T, name string) (supervisor, vmm int) {
	t.Helper()
	r := must(t, time.Minute, "inspect", name)
	var in struct {
		Backend struct {
			Pids struct {
				Supervisor int `json:"supervisor"`
				VMM        int `json:"vmm"`
			} `json:"pids"`
		} `json:"backend"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatalf("inspect: %v\n%s", err, r)
	}
	return in.Backend.Pids.Supervisor, in.Backend.Pids.VMM
}

// procsMentioning lists live processes whose command line contains s.
func procsMentioning(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, s) {
			out = append(out, fmt.Sprintf("%d: %.120s", pid, cmd))
		}
	}
	return out
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// A zombie is dead for our purposes.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
		return true
	}
	return false
}

// vmDir is where the e2e state keeps a VM.
func vmDir(name string) string { return filepath.Join(rootDir, "state", "vms", name) }

// assertTruthful checks that ls never calls a VM running whose VMM is dead.
func assertTruthful(t *testing.T, name string) vmState {
	t.Helper()
	st, ok := lsAll(t)[name]
	if !ok {
		return st
	}
	if st.State == "running" || st.State == "paused" {
		if _, vmm := pids(t, name); !alive(vmm) {
			t.Fatalf("ls says %s is %s but its VMM (pid %d) is dead", name, st.State, vmm)
		}
	}
	return st
}

// assertGone removes the VM with rm -f and checks nothing of it is left.
func assertGone(t *testing.T, name string) {
	t.Helper()
	if r := mvm(t, time.Minute, "", "rm", "-f", name); r.code != 0 && !strings.Contains(r.stderr, "no such VM") {
		t.Fatalf("rm -f %s: %s", name, r)
	}
	dir := vmDir(name)
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := procsMentioning(dir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left after rm -f %s:\n%s", name, strings.Join(left, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("VM dir %s left after rm -f (err %v)", dir, err)
	}
	if _, ok := lsAll(t)[name]; ok {
		t.Fatalf("%s still listed after rm -f", name)
	}
}

// waitState polls ls -a until name's state satisfies ok.
func waitState(t *testing.T, name string, d time.Duration, ok func(vmState) bool) vmState {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := lsAll(t)[name]
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %+v after %s", name, st, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCrashKillProcesses kills -9 the VMM, then the supervisor, of a running
// VM: ls must stop calling it running, and start/rm must still work.
func TestCrashKillProcesses(t *testing.T) {
	for _, victim := range []string{"vmm", "supervisor"} {
		t.Run(victim, func(t *testing.T) {
			name := "e2e-kill-" + victim[:3]
			must(t, bootTimeout, "up", "--name", name, "--memory", "128M")
			t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
			sup, vmm := pids(t, name)
			if !alive(sup) || !alive(vmm) {
				t.Fatalf("pids before kill: supervisor %d vmm %d", sup, vmm)
			}
			pid := vmm
			if victim == "supervisor" {
				pid = sup
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			st := waitState(t, name, 15*time.Second, func(s vmState) bool { return s.State != "running" })
			if st.State != "stopped" && st.State != "failed" {
				t.Fatalf("after kill -9 %s: %+v", victim, st)
			}
			// A killed process can take a moment to go (unmapping its RAM
			// file); it must be gone within a bounded time.
			gone := time.Now().Add(10 * time.Second)
			for alive(vmm) && time.Now().Before(gone) {
				time.Sleep(100 * time.Millisecond)
			}
			if alive(vmm) {
				t.Fatalf("QEMU %d survived its %s's death by 10s", vmm, victim)
			}
			// exec gives a clear error, not a hang.
			if r := mvm(t, time.Minute, "", "exec", name, "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "start "+name) {
				t.Fatalf("exec on crashed VM: %s", r)
			}
			assertGone(t, name)
		})
	}
}

// TestCrashKillCLI SIGKILLs `mvmctl up` at several points: the record must
// never claim a dead VM runs, and rm -f must leave nothing behind.
func TestCrashKillCLI(t *testing.T) {
	points := []struct {
		name string
		wait func(dir string) bool
	}{
		{"at-start", func(string) bool { return true }},
		{"dir-exists", func(dir string) bool { _, err := os.Stat(dir); return err == nil }},
		{"waiting-for-agent", func(dir string) bool {
			_, err := os.Stat(filepath.Join(dir, "pids.json"))
			return err == nil
		}},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			name := "e2e-cli-" + p.name
			if len(name) > 30 {
				name = name[:30]
			}
			name = strings.TrimRight(name, "-")
			cmd := exec.Command(mvmctl, "up", "--name", name, "--memory", "128M")
			cmd.Env = baseEnv
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
			deadline := time.Now().Add(2 * time.Minute)
			for !p.wait(vmDir(name)) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			st := assertTruthful(t, name)
			t.Logf("after SIGKILL %s: %+v", p.name, st)
			// Give a half-launched supervisor time to settle, then look again.
			time.Sleep(time.Second)
			assertTruthful(t, name)
			assertGone(t, name)
		})
	}
}

// TestInterruptUp: Ctrl-C while `up` waits for the guest leaves no VMM that
// ls does not show (it kills the VMM and records the VM as failed).
func TestInterruptUp(t *testing.T) {
	const name = "e2e-sigint"
	cmd := exec.Command(mvmctl, "up", "--name", name, "--memory", "128M")
	cmd.Env = baseEnv
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(vmDir(name), "pids.json")); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	t.Logf("up after SIGINT: %v\n%s", err, stderr.String())
	ee, ok := err.(*exec.ExitError)
	st := assertTruthful(t, name)
	if ok && ee.ExitCode() == 130 {
		if st.State != "failed" {
			t.Fatalf("interrupted up left state %+v", st)
		}
		if left := procsMentioning(vmDir(name)); len(left) > 0 {
			t.Fatalf("interrupted up left processes:\n%s", strings.Join(left, "\n"))
		}
	}
	assertGone(t, name)
}

// parallel is how many VMs the concurrency test boots (MVM_E2E_PARALLEL,
// default 10; ten 128 MiB TCG VMs boot in about 35 s on a 2-core host).
func parallel() int {
	if n, err := strconv.Atoi(os.Getenv("MVM_E2E_PARALLEL")); err == nil && n > 0 {
		return n
	}
	return 10
}

// TestConcurrentUpSameName: of 10 concurrent `up` of one name exactly one
// creates the VM; the others fail with "already exists".
func TestConcurrentUpSameName(t *testing.T) {
	const name = "e2e-race"
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
	var wg sync.WaitGroup
	res := make([]result, 10)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = mvm(t, bootTimeout, "", "up", "--name", name, "--memory", "128M")
		}()
	}
	wg.Wait()
	wins := 0
	for _, r := range res {
		switch {
		case r.code == 0:
			wins++
		case !strings.Contains(r.stderr, "already exists"):
			t.Errorf("loser failed oddly: %s", r)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of 10 concurrent ups succeeded", wins)
	}
	if st := lsAll(t)[name]; st.State != "running" {
		t.Fatalf("winner: %+v", st)
	}
	if n := len(procsMentioning(vmDir(name) + "/")); n > 2 {
		t.Fatalf("%d processes for one VM", n)
	}
	must(t, time.Minute, "exec", name, "--", "true")
}

// TestConcurrentUpDifferentNames boots MVM_E2E_PARALLEL VMs at once.
func TestConcurrentUpDifferentNames(t *testing.T) {
	n := parallel()
	t.Logf("booting %d VMs of 128 MiB concurrently (MVM_E2E_PARALLEL)", n)
	var wg sync.WaitGroup
	res := make([]result, n)
	for i := range n {
		name := fmt.Sprintf("e2e-par-%d", i)
		t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = mvm(t, bootTimeout, "", "up", "--name", name, "--memory", "128M")
		}()
	}
	wg.Wait()
	all := lsAll(t)
	for i, r := range res {
		name := fmt.Sprintf("e2e-par-%d", i)
		if r.code != 0 {
			t.Errorf("up %s: %s", name, r)
			continue
		}
		if all[name].State != "running" {
			t.Errorf("%s: %+v", name, all[name])
		}
		if out := must(t, time.Minute, "exec", name, "--", "hostname"); strings.TrimSpace(out.stdout) != name {
			t.Errorf("%s hostname %q", name, out.stdout)
		}
	}
}

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// poolInfo is the part of `pool inspect --json` the test reads.
type poolInfo struct {
	Size     int `json:"size"`
	Ready    int `json:"ready"`
	Warming  int `json:"warming"`
	Failed   int `json:"failed"`
	Refiller int `json:"refiller"`
	Members  []struct {
		Name string `json:"name"`
		PID  int    `json:"pid"`
		Dir  string `json:"dir"`
	} `json:"members"`
}

func inspectPool(t *testing.T, name string) poolInfo {
	t.Helper()
	var p poolInfo
	r := must(t, time.Minute, "pool", "inspect", name, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("pool inspect: %v\n%s", err, r)
	}
	return p
}

// waitPool waits until the pool has want ready members.
func waitPool(t *testing.T, name string, want int, timeout time.Duration) poolInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := inspectPool(t, name)
		if p.Ready >= want {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %d of %d ready after %s: %+v", name, p.Ready, want, timeout, p)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// guestPin is the guest key a VM's directory pins.
func guestPin(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "guest.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestPool: a pool of 2 from a template's snapshot; up --template hands
// out a member (new hostname, its own guest key, not in ls before), the
// pool refills, pool rm leaves no process, record or directory; a refiller
// killed -9 mid-refill leaves nothing pool rm does not clean.
func TestPool(t *testing.T) {
	const tpl, pool = "e2e-pooltpl", "e2e-pool"
	vms := []string{"e2e-pool-a", "e2e-pool-b", "e2e-pool-c"}
	t.Cleanup(func() {
		mvm(t, time.Minute, "", append([]string{"rm", "-f"}, vms...)...)
		mvm(t, time.Minute, "", "pool", "rm", pool)
		mvm(t, time.Minute, "", "template", "delete", "-f", tpl)
	})
	must(t, time.Minute, "template", "create", tpl, "--from", "minimal", "--memory", "128M", "--backend", "qemu", "--network", "none", "--expect-secret", "tok")
	secret := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, 10*time.Minute, "template", "build", tpl, "--snapshot")
	must(t, 5*time.Minute, "pool", "create", pool, "--template", tpl, "--size", "2", "--backend", "qemu", "--wait")
	before := inspectPool(t, pool)
	if before.Ready != 2 || len(before.Members) != 2 {
		t.Fatalf("pool after create --wait: %+v", before)
	}
	if ls := must(t, time.Minute, "ls", "-a", "--json"); strings.Contains(ls.stdout, pool+"-") {
		t.Fatalf("pooled VMs in ls: %s", ls.stdout)
	}
	if ls := must(t, time.Minute, "ls", "-a"); strings.Contains(ls.stdout, pool+"-") || !strings.Contains(ls.stderr, "2 wait in warm pools") {
		t.Fatalf("ls with a full pool: %s", ls)
	}
	if r := mvm(t, time.Minute, "", "template", "delete", tpl); r.code == 0 || !strings.Contains(r.stderr, "pool "+pool) {
		t.Fatalf("template delete while a pool uses it: %s", r)
	}
	memberDirs, memberPins := map[string]string{}, map[string]string{}
	for _, m := range before.Members {
		memberDirs[m.Dir] = m.Name
		memberPins[m.Dir] = guestPin(t, m.Dir)
	}

	// Members wait without the template's secrets; a hand-out needs them.
	if r := mvm(t, time.Minute, "", "up", "--template", tpl, "--name", "e2e-pool-x"); r.code == 0 || !strings.Contains(r.stderr, "tok") {
		t.Fatalf("hand-out without the template's secret: %s", r)
	}
	pins := map[string]string{}
	t.Run("hand-out", func(t *testing.T) {
		// Two at once: each takes a member of its own.
		ups := make([]result, 2)
		var wg sync.WaitGroup
		for i, name := range vms[:2] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ups[i] = mvm(t, 2*time.Minute, "", "up", "--template", tpl, "--name", name, "--backend", "qemu", "--json", "--secret", "tok=@"+secret)
			}()
		}
		wg.Wait()
		dirs := map[string]bool{}
		for i, name := range vms[:2] {
			r := ups[i]
			if r.code != 0 || !strings.Contains(r.stdout, `"from_pool": "`+pool+`"`) {
				t.Fatalf("up --template with a pool did not hand out: %s", r)
			}
			out := must(t, time.Minute, "exec", name, "--", "sh", "-c", "hostname; cat /run/secrets/tok")
			if got := strings.Fields(out.stdout); len(got) != 2 || got[0] != name || got[1] != "s3cret" {
				t.Fatalf("hostname and secret of %s: %q", name, out.stdout)
			}
			var insp struct {
				Record struct {
					Dir      string `json:"dir"`
					FromPool string `json:"from_pool"`
				} `json:"record"`
			}
			r = must(t, time.Minute, "inspect", name, "--json")
			if err := json.Unmarshal([]byte(r.stdout), &insp); err != nil {
				t.Fatal(err)
			}
			pins[name] = guestPin(t, insp.Record.Dir)
			if memberDirs[insp.Record.Dir] == "" || dirs[insp.Record.Dir] {
				t.Fatalf("%s runs from %s: not one of the members %v, or another hand-out's", name, insp.Record.Dir, memberDirs)
			}
			dirs[insp.Record.Dir] = true
			if pins[name] == memberPins[insp.Record.Dir] {
				t.Fatalf("%s kept its member's guest key: the hand-out did not rotate it", name)
			}
		}
		if pins[vms[0]] == pins[vms[1]] {
			t.Fatalf("two hand-outs share a guest key")
		}
		// The pool refills behind the hand-outs.
		waitPool(t, pool, 2, 4*time.Minute)
	})

	t.Run("rm-of-a-handed-out-VM", func(t *testing.T) {
		var insp struct {
			Record struct {
				Dir string `json:"dir"`
				PID int    `json:"pid"`
			} `json:"record"`
		}
		r := must(t, time.Minute, "inspect", vms[0], "--json")
		if err := json.Unmarshal([]byte(r.stdout), &insp); err != nil {
			t.Fatal(err)
		}
		must(t, time.Minute, "rm", "-f", vms[0])
		if _, err := os.Stat(insp.Record.Dir); !os.IsNotExist(err) {
			t.Fatalf("handed-out VM's directory left after rm: %v", err)
		}
		if alive(insp.Record.PID) {
			t.Fatalf("handed-out VM's QEMU %d alive after rm", insp.Record.PID)
		}
	})

	t.Run("refiller-killed", func(t *testing.T) {
		// A hand-out starts the refiller; kill it -9 while it restores.
		must(t, 2*time.Minute, "up", "--pool", pool, "--name", vms[2], "--secret", "tok=@"+secret)
		deadline := time.Now().Add(30 * time.Second)
		var p poolInfo
		for {
			p = inspectPool(t, pool)
			if p.Refiller > 0 && p.Warming > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no refiller making a member: %+v", p)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // into the restore
		if err := syscall.Kill(p.Refiller, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); alive(p.Refiller); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("refiller %d alive after kill -9", p.Refiller)
			}
		}
		after := inspectPool(t, pool)
		if after.Refiller != 0 {
			t.Fatalf("refiller still reported after kill -9: %+v", after)
		}
		var pids []int
		var dirs []string
		for _, m := range after.Members {
			pids = append(pids, m.PID)
			dirs = append(dirs, m.Dir)
		}
		must(t, 2*time.Minute, "pool", "rm", pool)
		for _, pid := range pids {
			if alive(pid) {
				t.Fatalf("member QEMU %d alive after pool rm", pid)
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Fatalf("member dir %s left after pool rm: %v", d, err)
			}
		}
		ents, _ := os.ReadDir(filepath.Join(rootDir, "state", "vms", ".pool"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), pool+"-") {
				if b, err := os.ReadFile(filepath.Join(rootDir, "state", "vms", ".pool", e.Name(), "vm.json")); err == nil && !strings.Contains(string(b), `"from_pool"`) {
					t.Fatalf("member %s left after pool rm: %s", e.Name(), b)
				}
			}
		}
		if r := mvm(t, time.Minute, "", "pool", "inspect", pool); r.code == 0 {
			t.Fatalf("pool inspect after rm: %s", r)
		}
		// No process (QEMU, supervisor) runs from a removed member's directory.
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, c := range procs {
			b, err := os.ReadFile(c)
			for _, d := range dirs {
				if err == nil && strings.Contains(string(b), d) {
					t.Fatalf("%s still runs from removed member %s: %q", c, d, b)
				}
			}
		}
		// Handed-out VMs are the user's and outlive the pool.
		if out := must(t, time.Minute, "exec", vms[2], "--", "hostname"); strings.TrimSpace(out.stdout) != vms[2] {
			t.Fatalf("hostname of %s: %q", vms[2], out.stdout)
		}
	})
}

// TestPoolNetwork: members on a bridged network. A hand-out keeps the
// member's own address and MAC (none another VM has), and the network and
// the guest now know it by the user's name: DNS, /etc/hosts, hostname.
// Nothing is left on the host after pool rm, rm and network rm.
func TestPoolNetwork(t *testing.T) {
	l := newNetLab(t)
	before := l.hostState(t)
	const tpl, pool = "pnet", "pnet-pool"
	// Registered after the lab's: runs before its clean-up.
	t.Cleanup(func() {
		l.run(t, 2*time.Minute, "pool", "rm", pool)
		l.run(t, time.Minute, "template", "delete", "-f", tpl)
	})
	l.must(t, time.Minute, "network", "create", "isolated")
	l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", "peer", "--network", "isolated")
	l.must(t, time.Minute, "template", "create", tpl, "--from", "minimal", "--memory", "128M", "--backend", "qemu", "--network", "isolated")
	l.must(t, 10*time.Minute, "template", "build", tpl, "--snapshot")
	l.must(t, 5*time.Minute, "pool", "create", pool, "--template", tpl, "--size", "1", "--wait")
	r := l.must(t, 2*time.Minute, "up", "--template", tpl, "--name", "h", "--json")
	if !strings.Contains(r.stdout, `"from_pool": "`+pool+`"`) {
		t.Fatalf("not handed out from the pool: %s", r)
	}
	ip := l.vmIP(t, "h")
	if ip == "" || ip == l.vmIP(t, "peer") {
		t.Fatalf("hand-out's address %q (peer %q)", ip, l.vmIP(t, "peer"))
	}
	if r := l.sh(t, "h", "hostname; cat /etc/hosts; ip -4 addr show eth0"); !strings.HasPrefix(r.stdout, "h\n") ||
		!strings.Contains(r.stdout, ip+" h.isolated h") || !strings.Contains(r.stdout, ip+"/") || strings.Contains(r.stdout, pool+"-") {
		t.Fatalf("hand-out's identity:\n%s", r)
	}
	if r := l.nslookup(t, "peer", "h"); !strings.Contains(r.stdout, ip) {
		t.Fatalf("h does not resolve to %s:\n%s", ip, r)
	}
	if r := l.sh(t, "h", "ping -c1 -W5 peer"); r.code != 0 {
		t.Fatalf("h cannot reach its peer by name:\n%s", r)
	}
	// The refill restores onto the network with an address of its own.
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var p poolInfo
		r := l.must(t, time.Minute, "pool", "inspect", pool, "--json")
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatal(err)
		}
		if p.Ready == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool did not refill: %+v", p)
		}
	}
	l.must(t, 2*time.Minute, "pool", "rm", pool)
	l.must(t, time.Minute, "rm", "-f", "h", "peer")
	l.must(t, time.Minute, "template", "delete", tpl)
	// Refused while any attachment (a leaked member's) remains.
	l.must(t, time.Minute, "network", "rm", "isolated")
	if after := l.hostState(t); after != before {
		t.Fatalf("host state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

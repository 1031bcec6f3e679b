package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestNetwork boots VMs on real networks inside a lab of namespaces (see
// netLab): VMs of one network talk by name, other networks cannot reach
// them, NAT reaches the fake internet by name through the host's current
// resolver, published ports answer host clients, internal networks have no
// way out, clones get their own addresses, and everything mvm made is gone
// afterwards. Subtests share the booted VMs.
func TestNetwork(t *testing.T) {
	l := newNetLab(t)
	before := l.hostState(t)

	l.must(t, time.Minute, "network", "create", "isolated")
	l.must(t, time.Minute, "network", "create", "sealed", "--internal")
	// A --subnet that collides with the host's uplink is refused.
	if r := l.run(t, time.Minute, "network", "create", "clash", "--subnet", "198.18.0.0/24"); r.code == 0 || !strings.Contains(r.stderr, "collides") {
		t.Fatalf("colliding subnet accepted:\n%s", r)
	}
	for _, vm := range []struct{ name, net string }{{"a", "isolated"}, {"b", "isolated"}, {"c", ""}, {"e", "sealed"}} {
		args := []string{"up", "--backend", "qemu", "--name", vm.name}
		if vm.net != "" {
			args = append(args, "--network", vm.net)
		}
		l.must(t, bootTimeout, args...)
	}
	ipA, ipC := l.vmIP(t, "a"), l.vmIP(t, "c")
	if ipA == "" || ipC == "" || ipA == l.vmIP(t, "b") {
		t.Fatalf("addresses: a=%q b=%q c=%q", ipA, l.vmIP(t, "b"), ipC)
	}

	t.Run("VMs on one network reach each other by name", func(t *testing.T) {
		for _, target := range []string{"b", "b.isolated"} {
			if r := l.sh(t, "a", "ping -c1 -W5 "+target); r.code != 0 {
				t.Fatalf("a cannot ping %s:\n%s", target, r)
			}
		}
		if r := l.nslookup(t, "b", "a.isolated"); r.code != 0 || !strings.Contains(r.stdout, ipA) {
			t.Fatalf("a.isolated does not resolve to %s:\n%s", ipA, r)
		}
	})

	t.Run("another network cannot reach them", func(t *testing.T) {
		if r := l.sh(t, "c", "ping -c1 -W2 "+ipA); r.code == 0 {
			t.Fatalf("c (default) reached a (isolated):\n%s", r)
		}
		if r := l.sh(t, "a", "ping -c1 -W2 "+ipC); r.code == 0 {
			t.Fatalf("a (isolated) reached c (default):\n%s", r)
		}
		// Nor the host's other addresses: the uplink address is the host's.
		if r := l.sh(t, "c", "nc -w 2 "+labHostAddr+" 22 </dev/null; ping -c1 -W2 "+labHostAddr); r.code == 0 {
			t.Fatalf("c reached the host's uplink address:\n%s", r)
		}
		// A name from another network does not resolve here.
		if r := l.sh(t, "c", "nslookup a.isolated"); r.code == 0 && strings.Contains(r.stdout, ipA) {
			t.Fatalf("c resolved a.isolated:\n%s", r)
		}
	})

	t.Run("NAT reaches the fake internet by name", func(t *testing.T) {
		r := l.sh(t, "c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 web.test 80`)
		if r.code != 0 || !strings.Contains(r.stdout, labWebBody) {
			t.Fatalf("fetch through NAT:\n%s", r)
		}
	})

	t.Run("DNS follows the host's resolver change", func(t *testing.T) {
		l.setResolver(t, labDNS2) // this resolver answers web.test with the second address
		t.Cleanup(func() { l.setResolver(t, labDNS1) })
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := l.sh(t, "c", "nslookup web.test")
			if strings.Contains(r.stdout, labWebIP2) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web.test still does not resolve through the new resolver:\n%s", r)
			}
			time.Sleep(300 * time.Millisecond)
		}
	})

	t.Run("an internal network has no way out", func(t *testing.T) {
		if r := l.sh(t, "e", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 `+labWebIP+` 80`); strings.Contains(r.stdout, labWebBody) {
			t.Fatalf("internal VM reached the fake internet:\n%s", r)
		}
		if r := l.sh(t, "e", "ip route"); strings.Contains(r.stdout, "default") {
			t.Fatalf("internal VM has a default route:\n%s", r)
		}
	})

	t.Run("published port answers a host client for the VM's lifetime", func(t *testing.T) {
		const port = "127.0.0.1:18080"
		l.must(t, bootTimeout, "up", "--backend", "qemu", "--image", "http", "--name", "web", "-p", port+":80")
		body, err := l.httpGet(t, port)
		if err != nil || !strings.Contains(body, "It works") {
			t.Fatalf("GET %s: %v\n%s", port, err, body)
		}
		if r := l.must(t, time.Minute, "ls"); !strings.Contains(r.stdout, port+":80/tcp") {
			t.Fatalf("ls does not show the port:\n%s", r)
		}
		// A second VM cannot take the same host port.
		if r := l.run(t, bootTimeout, "up", "--backend", "qemu", "--name", "web2", "-p", port+":80"); r.code == 0 || !strings.Contains(r.stderr, "already published") {
			t.Fatalf("port published twice:\n%s", r)
		}
		l.run(t, time.Minute, "rm", "-f", "web2")
		l.must(t, 2*time.Minute, "down", "web")
		if _, err := l.httpGet(t, port); err == nil {
			t.Fatal("port still open after down")
		}
		l.must(t, bootTimeout, "start", "web")
		if body, err := l.httpGet(t, port); err != nil || !strings.Contains(body, "It works") {
			t.Fatalf("port not back after start: %v\n%s", err, body)
		}
		l.must(t, time.Minute, "rm", "-f", "web")
		if _, err := l.httpGet(t, port); err == nil {
			t.Fatal("port still open after rm")
		}
	})

	t.Run("clones get their own addresses and names", func(t *testing.T) {
		l.must(t, 2*time.Minute, "snapshot", "create", "a", "snap-a")
		t.Cleanup(func() {
			l.run(t, time.Minute, "rm", "-f", "a1", "a2")
			l.run(t, time.Minute, "snapshot", "rm", "-f", "snap-a")
		})
		l.must(t, bootTimeout, "up", "--from-snapshot", "snap-a", "--name", "a1")
		l.must(t, bootTimeout, "up", "--from-snapshot", "snap-a", "--name", "a2")
		ip1, ip2 := l.vmIP(t, "a1"), l.vmIP(t, "a2")
		if ip1 == ip2 || ip1 == ipA || ip2 == ipA {
			t.Fatalf("clone addresses a=%s a1=%s a2=%s", ipA, ip1, ip2)
		}
		if r := l.sh(t, "a1", "ip -4 addr show eth0"); !strings.Contains(r.stdout, ip1+"/") || strings.Contains(r.stdout, ipA+"/") {
			t.Fatalf("a1's NIC:\n%s", r)
		}
		if r := l.sh(t, "a1", "ping -c1 -W5 a2 && ping -c1 -W5 a"); r.code != 0 {
			t.Fatalf("clone cannot reach its peers by name:\n%s", r)
		}
		if r := l.nslookup(t, "b", "a2"); !strings.Contains(r.stdout, ip2) {
			t.Fatalf("a2 does not resolve to %s:\n%s\n%s", ip2, r, l.firewall(t))
		}
		if r := l.sh(t, "a2", "hostname; cat /etc/hosts"); !strings.Contains(r.stdout, "a2\n") || !strings.Contains(r.stdout, ip2+" a2.isolated a2") {
			t.Fatalf("clone's identity:\n%s", r)
		}
		l.must(t, time.Minute, "rm", "-f", "a1", "a2")
		l.must(t, time.Minute, "snapshot", "rm", "snap-a")
	})

	t.Run("restoring onto a removed network is a clear error", func(t *testing.T) {
		l.must(t, time.Minute, "network", "create", "gone")
		l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", "g", "--network", "gone")
		l.must(t, 2*time.Minute, "snapshot", "create", "g", "snap-g")
		l.must(t, time.Minute, "rm", "-f", "g")
		l.must(t, time.Minute, "network", "rm", "gone")
		r := l.run(t, bootTimeout, "up", "--from-snapshot", "snap-g", "--name", "g2")
		if r.code == 0 || !strings.Contains(r.stderr, "gone") || !strings.Contains(r.stderr, "no such network") {
			t.Fatalf("restore onto a removed network:\n%s", r)
		}
		l.run(t, time.Minute, "rm", "-f", "g2")
		l.must(t, time.Minute, "snapshot", "rm", "snap-g")
	})

	t.Run("user mode reaches out and publishes", func(t *testing.T) {
		const port = "127.0.0.1:18081"
		l.must(t, bootTimeout, "up", "--backend", "qemu", "--network", "user", "--image", "http", "--name", "u", "-p", port+":80")
		if body, err := l.httpGet(t, port); err != nil || !strings.Contains(body, "It works") {
			t.Fatalf("GET %s: %v\n%s", port, err, body)
		}
		r := l.sh(t, "u", `printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 nc -w 5 web.test 80`)
		if !strings.Contains(r.stdout, labWebBody) {
			t.Fatalf("user mode egress:\n%s", r)
		}
		l.must(t, time.Minute, "rm", "-f", "u")
	})

	t.Run("network rm is refused while VMs use it", func(t *testing.T) {
		r := l.run(t, time.Minute, "network", "rm", "isolated")
		if r.code == 0 || !strings.Contains(r.stderr, "a, b") {
			t.Fatalf("network rm of a used network:\n%s", r)
		}
		r = l.run(t, time.Minute, "network", "rm", "-f", "isolated")
		if r.code == 0 || !strings.Contains(r.stderr, "running VMs") {
			t.Fatalf("network rm -f with running VMs:\n%s", r)
		}
		if r := l.must(t, time.Minute, "network", "inspect", "isolated"); !strings.Contains(r.stdout, ipA) {
			t.Fatalf("inspect does not list a:\n%s", r)
		}
	})

	t.Run("nothing is left after rm", func(t *testing.T) {
		l.removeAll(t)
		if after := l.hostState(t); after != before {
			t.Fatalf("host namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// TestNetworkUpRmCycles: 20 up/rm cycles, some with the CLI killed mid-up,
// leave the host namespace exactly as it was.
func TestNetworkUpRmCycles(t *testing.T) {
	l := newNetLab(t)
	// The default network is made once; cycles must not grow anything.
	l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", "seed")
	l.must(t, time.Minute, "rm", "-f", "seed")
	before := l.hostState(t)
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("cyc%d", i)
		if i%5 == 4 {
			// Killed mid-boot: the record, its address and its TAP exist,
			// and rm must clean all of them.
			l.kill9(t, time.Second+time.Duration(i)*100*time.Millisecond, "up", "--backend", "qemu", "--name", name, "-p", "127.0.0.1:18090:80")
		} else {
			l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", name, "-p", "127.0.0.1:18090:80")
		}
		l.must(t, time.Minute, "rm", "-f", name)
	}
	if after := l.hostState(t); after != before {
		t.Fatalf("host namespace changed after 20 cycles:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkUnprivileged: an ordinary user (no CAP_NET_ADMIN) gets
// user-mode networking on the default network: the VM reaches the fake
// internet by name and a published port answers, with no bridge, TAP or
// rule made on the host.
func TestNetworkUnprivileged(t *testing.T) {
	l := newNetLab(t)
	u := l.unprivileged(t, 65534)
	before := l.hostState(t)
	const port = "127.0.0.1:18082"
	u.must(t, bootTimeout, "up", "--backend", "qemu", "--image", "http", "--name", "plain", "-p", port+":80")
	t.Cleanup(func() { u.run(t, time.Minute, "rm", "-f", "plain") })
	var n struct {
		Mode   string `json:"mode"`
		VMToVM bool   `json:"vm_to_vm"`
		VMs    []struct{ VM, IP string }
	}
	r := u.must(t, time.Minute, "network", "inspect", "default", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &n); err != nil || n.Mode != "user" || n.VMToVM || len(n.VMs) != 1 || n.VMs[0].VM != "plain" {
		t.Fatalf("inspect of an unprivileged default network: %v\n%s", err, r)
	}
	if body, err := l.httpGet(t, port); err != nil || !strings.Contains(body, "It works") {
		t.Fatalf("GET %s: %v\n%s", port, err, body)
	}
	// nc is bounded and the body is what counts (see docs/networking.md
	// on user-mode stacks holding closed connections).
	r = u.sh(t, "plain", `printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 nc -w 5 web.test 80`)
	if !strings.Contains(r.stdout, labWebBody) {
		t.Fatalf("user-mode egress as an ordinary user:\n%s\n%s\n%s", r,
			u.sh(t, "plain", "timeout 10 nslookup web.test; cat /etc/resolv.conf"),
			u.sh(t, "plain", `printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 nc -w 5 `+labWebIP+` 80`))
	}
	if after := l.hostState(t); after != before {
		t.Fatalf("an unprivileged VM changed the host namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	u.must(t, time.Minute, "rm", "-f", "plain")
}

//go:build linux

package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// TestForwardOnDockerHost runs in the host's own namespace, where Docker's
// FORWARD policy is DROP: a namespace standing in for a VM, on a bridged
// network of ours, reaches a server in a namespace standing in for the
// internet only once our DOCKER-USER accepts are in place; our own table's
// accept alone does not get past Docker's drop. Everything it makes
// (bridge, veths, namespaces, our table, the DOCKER-USER rules) is removed.
func TestForwardOnDockerHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change the host's links and firewall")
	}
	if !dockerUserChain() {
		t.Skip("needs Docker's iptables chains (a running Docker engine): this test checks mvm's way past Docker's FORWARD drop")
	}
	if drops, err := dockerForwardDrops(); err != nil || !drops {
		t.Skipf("needs Docker's FORWARD policy DROP to test against (policy drop=%v, %v)", drops, err)
	}
	id := fmt.Sprint(os.Getpid() % 100000)
	vmNS, inetNS := "mvmtvm"+id, "mvmtin"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	m := testManager(t)
	ctx := context.Background()
	n, err := m.Create(ctx, CreateOptions{Name: "dockerhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := m.Remove(ctx, n.Name, true, nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if linkExists(n.Bridge) {
			t.Error("bridge left behind")
		}
		for _, r := range dockerUserRules {
			if exec.Command("iptables", append([]string{"-w", "5", "-C", "DOCKER-USER"}, r...)...).Run() == nil && !anyLinkWithPrefix(LinkPrefix) {
				t.Errorf("DOCKER-USER rule %v left behind", r)
			}
		}
	})
	lease, err := m.Attach(ctx, n.Name, "stand-in", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The stand-in VM: a namespace on a veth whose host end is a bridge
	// port (its name starts with mvm, like every link of ours).
	run("ip", "netns", "add", vmNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", vmNS).Run() })
	run("ip", "netns", "add", inetNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", inetNS).Run() })
	// The uplink must not look like one of our links (mvm*): those are
	// other networks, which ours may not reach.
	port, uplink := "mvmtp"+id, "tstup"+id
	run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", vmNS)
	t.Cleanup(func() { exec.Command("ip", "link", "del", port).Run() })
	run("ip", "link", "set", port, "master", n.Bridge, "up")
	run("ip", "-n", vmNS, "addr", "add", lease.Attach.IP+"/24", "dev", "eth0")
	run("ip", "-n", vmNS, "link", "set", "eth0", "up")
	run("ip", "-n", vmNS, "route", "add", "default", "via", n.Gateway)
	// The stand-in internet: a /30 on a veth into a namespace of ours.
	run("ip", "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", inetNS)
	t.Cleanup(func() { exec.Command("ip", "link", "del", uplink).Run() })
	run("ip", "addr", "add", "198.18.77.1/30", "dev", uplink)
	run("ip", "link", "set", uplink, "up")
	run("ip", "-n", inetNS, "addr", "add", "198.18.77.2/30", "dev", "eth0")
	run("ip", "-n", inetNS, "link", "set", "eth0", "up")
	run("ip", "-n", inetNS, "link", "set", "lo", "up")

	var ln net.Listener
	inNamedNS(t, inetNS, func() (err error) {
		ln, err = net.Listen("tcp", "198.18.77.2:8080")
		return err
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("through"))
			c.Close()
		}
	}()
	reach := func() error {
		var err error
		inNamedNS(t, vmNS, func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", "198.18.77.2:8080", 2*time.Second)
			if err == nil {
				c.Close()
			}
			return nil
		})
		return err
	}
	// Our table accepts, but Docker's drop wins without DOCKER-USER.
	if err := dockerUserAllow(false); err != nil {
		t.Fatal(err)
	}
	if err := reach(); err == nil {
		t.Fatal("forwarded without the DOCKER-USER accepts: this host's FORWARD drop is not what the test assumes")
	}
	if err := dockerUserAllow(true); err != nil {
		t.Fatal(err)
	}
	if err := reach(); err != nil {
		out, _ := exec.Command("sh", "-c", "iptables -L FORWARD -v -n; iptables -L DOCKER-USER -v -n; nft list table inet "+m.Table+"; ip route; ip -br addr").CombinedOutput()
		t.Fatalf("stand-in VM cannot reach the stand-in internet through NAT on a Docker host: %v\n%s", err, out)
	}
}

// inNamedNS runs fn on a thread inside the named namespace.
func inNamedNS(t *testing.T, name string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", name, err)
	}
}

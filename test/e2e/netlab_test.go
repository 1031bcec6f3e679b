package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// A netLab is a small world of network namespaces for one test: "host",
// where mvmctl runs (its bridges, TAPs, nftables rules and DNS servers all
// live there), and "inet", a fake internet reached through the host's only
// default route, holding a web server and DNS servers at test addresses.
// Nothing a VM sends can leave these namespaces.
type netLab struct {
	host, inet string
	env        []string
	// prefix runs before mvmctl inside the namespace (setpriv for an
	// ordinary user); bin is where that user finds mvmctl.
	prefix     []string
	bin        string
	resolvConf string // the host namespace's /etc/resolv.conf
	// answer is what the fake internet's DNS says web.test is.
	answer atomic.Value
	// udpSeen counts datagrams each named host's UDP service received.
	udpSeen map[string]*atomic.Int64
}

// Fake internet addresses (198.18.0.0/15 is reserved for benchmarking).
const (
	labHostAddr = "198.18.0.2"
	labInetAddr = "198.18.0.1"
	labWebIP    = "198.18.1.10"
	labWebIP2   = "198.18.1.11"
	labDNS1     = "198.18.1.53"
	labDNS2     = "198.18.1.54"
	labWebBody  = "hello from the fake internet"
)

// labNames are the fake internet's other hosts (egress tests): a name in
// the registries preset, one in dev only, and two in no preset.
var labNames = map[string]string{
	"deb.debian.org.":  "198.18.1.20",
	"github.com.":      "198.18.1.21",
	"example.com.":     "198.18.1.22",
	"api.example.com.": "198.18.1.23",
}

func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces, bridges and TAPs")
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	l := &netLab{host: "mvmh" + id, inet: "mvmi" + id, udpSeen: map[string]*atomic.Int64{}}
	for _, a := range labNames {
		l.udpSeen[a] = new(atomic.Int64)
	}
	l.answer.Store(labWebIP)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", l.host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.host).Run() })
	ip("netns", "add", l.inet)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.inet).Run() })
	ip("link", "add", "up0", "netns", l.host, "type", "veth", "peer", "name", "down0", "netns", l.inet)
	ip("-n", l.host, "link", "set", "lo", "up")
	ip("-n", l.host, "addr", "add", labHostAddr+"/24", "dev", "up0")
	ip("-n", l.host, "link", "set", "up0", "up")
	ip("-n", l.host, "route", "add", "default", "via", labInetAddr)
	ip("-n", l.inet, "link", "set", "lo", "up")
	ip("-n", l.inet, "addr", "add", labInetAddr+"/24", "dev", "down0")
	ip("-n", l.inet, "link", "set", "down0", "up")
	addrs := []string{labWebIP, labWebIP2, labDNS1, labDNS2}
	for _, a := range labNames {
		addrs = append(addrs, a)
	}
	for _, a := range addrs {
		ip("-n", l.inet, "addr", "add", a+"/32", "dev", "lo")
	}
	// ip netns exec bind-mounts this over /etc/resolv.conf for mvmctl and
	// everything it starts.
	etc := filepath.Join("/etc/netns", l.host)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	l.resolvConf = filepath.Join(etc, "resolv.conf")
	l.setResolver(t, labDNS1)

	l.serveInet(t)

	dir := t.TempDir()
	l.env = append(os.Environ(),
		"MVM_CACHE_DIR="+envValue(baseEnv, "MVM_CACHE_DIR"),
		"MVM_STATE_DIR="+filepath.Join(dir, "state"),
		"MVM_CONFIG_DIR="+filepath.Join(dir, "config"),
		"MVM_SHARE_DIR="+filepath.Join(dir, "share"),
	)
	_ = os.MkdirAll(filepath.Join(dir, "config"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "config", "config.toml"), []byte("default_backend = \"qemu\"\ndefault_memory_mib = 128\n"), 0o600)
	t.Cleanup(func() { l.removeAll(t) })
	return l
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// setResolver rewrites the host namespace's resolv.conf in place, as a VPN
// client would (a rename would not show through the bind mount).
func (l *netLab) setResolver(t *testing.T, server string) {
	t.Helper()
	if err := os.WriteFile(l.resolvConf, []byte("nameserver "+server+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// inNS runs fn on a thread inside namespace ns. Sockets fn opens stay in
// ns afterwards, whichever thread uses them.
func inNS(t *testing.T, ns string, fn func() error) {
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
		h, err := netns.GetFromName(ns)
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
		t.Fatalf("in namespace %s: %v", ns, err)
	}
}

// serveInet starts the fake internet's servers: HTTP on both web
// addresses, and two DNS servers that answer web.test differently, so a
// test can tell which resolver answered.
func (l *netLab) serveInet(t *testing.T) {
	var lns []net.Listener
	var pcs []net.PacketConn
	inNS(t, l.inet, func() error {
		web := []string{labWebIP, labWebIP2}
		for _, a := range labNames {
			web = append(web, a)
			// A UDP echo service on every named host (egress tests).
			pc, err := net.ListenPacket("udp", a+":7")
			if err != nil {
				return err
			}
			t.Cleanup(func() { pc.Close() })
			seen := l.udpSeen[a]
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					seen.Add(1)
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
		for _, a := range web {
			ln, err := net.Listen("tcp", a+":80")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		for _, a := range []string{labDNS1, labDNS2} {
			pc, err := net.ListenPacket("udp", a+":53")
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	for _, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					buf := make([]byte, 4096)
					c.Read(buf)
					fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(labWebBody), labWebBody)
				}()
			}
		}()
	}
	for i, pc := range pcs {
		answer := func() string { return l.answer.Load().(string) }
		if i == 1 {
			answer = func() string { return labWebIP2 }
		}
		srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if len(r.Question) != 1 {
				m.Rcode = dns.RcodeFormatError
				w.WriteMsg(m)
				return
			}
			q := strings.ToLower(r.Question[0].Name)
			ip, ok := labNames[q]
			if q == "web.test." {
				ip, ok = answer(), true
			}
			switch {
			case ok && r.Question[0].Qtype == dns.TypeA:
				rr, _ := dns.NewRR(q + " 30 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			case ok: // NOERROR, no data
			default:
				m.Rcode = dns.RcodeNameError
			}
			w.WriteMsg(m)
		})}
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
}

// run runs mvmctl inside the host namespace.
func (l *netLab) run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", l.argv(args)...)
	cmd.Env = l.env
	return runResult(t, ctx, cmd, timeout)
}

// kill9 starts mvmctl in the host namespace and kills it with SIGKILL after d.
func (l *netLab) kill9(t *testing.T, d time.Duration, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", l.argv(args)...)
	cmd.Env = l.env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// argv is ip's arguments to run mvmctl args in the host namespace.
func (l *netLab) argv(args []string) []string {
	bin := mvmctl
	if l.bin != "" {
		bin = l.bin
	}
	out := append([]string{"netns", "exec", l.host}, l.prefix...)
	return append(append(out, bin), args...)
}

// unprivileged returns a view of the lab whose mvmctl runs as uid (no
// capabilities) with state, cache and binaries of that user's own.
func (l *netLab) unprivileged(t *testing.T, uid int) *netLab {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to run mvmctl as an ordinary user")
	}
	dir, err := os.MkdirTemp("", "mvmu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{dir, bin, filepath.Join(dir, "home"), filepath.Join(dir, "config")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"mvmctl", "mvm-agent", "mvm-supervisor"} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(mvmctl), b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "config", "config.toml"), []byte("default_memory_mib = 128\n"), 0o644)
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, uid), dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	u := &netLab{host: l.host, inet: l.inet, resolvConf: l.resolvConf, bin: filepath.Join(bin, "mvmctl"),
		prefix: []string{"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}}
	u.env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + filepath.Join(dir, "home"),
		"MVM_CACHE_DIR=" + filepath.Join(dir, "cache"), "MVM_STATE_DIR=" + filepath.Join(dir, "state"),
		"MVM_CONFIG_DIR=" + filepath.Join(dir, "config"), "MVM_SHARE_DIR=" + filepath.Join(dir, "share")}
	return u
}

func (l *netLab) must(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	r := l.run(t, timeout, args...)
	if r.code != 0 {
		t.Fatalf("mvmctl %v failed:\n%s", args, r)
	}
	return r
}

// nslookup resolves name in vm, retrying a lost datagram a few times.
func (l *netLab) nslookup(t *testing.T, vm, name string) result {
	t.Helper()
	var r result
	for i := 0; i < 3; i++ {
		if r = l.sh(t, vm, "nslookup "+name); r.code == 0 || strings.Contains(r.stdout+r.stderr, "NXDOMAIN") {
			return r
		}
	}
	return r
}

// sh runs a shell command in a VM.
func (l *netLab) sh(t *testing.T, vm, script string) result {
	t.Helper()
	return l.run(t, time.Minute, "exec", vm, "--", "sh", "-c", script)
}

// httpGet fetches url from the host namespace (where published ports are).
func (l *netLab) httpGet(t *testing.T, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	var derr error
	inNS(t, l.host, func() error {
		c, derr = net.DialTimeout("tcp", addr, 5*time.Second)
		return nil
	})
	if derr != nil {
		return "", derr
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	return string(b), err
}

// vmIP is the VM's address as ls reports it.
func (l *netLab) vmIP(t *testing.T, vm string) string {
	t.Helper()
	var items []struct {
		Name, IP, Network string
	}
	r := l.must(t, time.Minute, "ls", "-a", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &items); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, r)
	}
	for _, it := range items {
		if it.Name == vm {
			return it.IP
		}
	}
	t.Fatalf("VM %s not listed:\n%s", vm, r)
	return ""
}

// removeAll removes every VM, snapshot and network of the lab.
func (l *netLab) removeAll(t *testing.T) {
	var items []struct{ Name string }
	if r := l.run(t, time.Minute, "ls", "-a", "--json"); r.code == 0 {
		_ = json.Unmarshal([]byte(r.stdout), &items)
	}
	for _, it := range items {
		l.run(t, time.Minute, "rm", "-f", it.Name)
	}
	var snaps []struct{ Name string }
	if r := l.run(t, time.Minute, "snapshot", "ls", "--json"); r.code == 0 {
		_ = json.Unmarshal([]byte(r.stdout), &snaps)
	}
	for _, s := range snaps {
		l.run(t, time.Minute, "snapshot", "rm", "-f", s.Name)
	}
	var nets []struct{ Name string }
	if r := l.run(t, time.Minute, "network", "ls", "--json"); r.code == 0 {
		_ = json.Unmarshal([]byte(r.stdout), &nets)
	}
	for _, n := range nets {
		l.run(t, time.Minute, "network", "rm", n.Name)
	}
}

// hostState is what the host namespace has: links, addresses, routes and
// nftables tables, one sorted line each.
func (l *netLab) hostState(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, args := range [][]string{
		{"-n", l.host, "-br", "link", "show"},
		{"-n", l.host, "-br", "addr", "show"},
		{"-n", l.host, "route", "show"},
	} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			// A bridge's carrier follows its ports a moment later: keep
			// what exists (names, addresses, routes), not link state.
			var keep []string
			for i, w := range f {
				if w == "linkdown" || (args[2] == "-br" && i == 1) || strings.HasPrefix(w, "<") {
					continue
				}
				keep = append(keep, w)
			}
			lines = append(lines, args[3]+": "+strings.Join(keep, " "))
		}
	}
	inNS(t, l.host, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		for _, tb := range tables {
			lines = append(lines, "nft table: "+tb.Name)
		}
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// firewall is the host namespace's nftables ruleset and DNS logs, for
// failure messages.
func (l *netLab) firewall(t *testing.T) string {
	out, _ := exec.Command("ip", "netns", "exec", l.host, "nft", "list", "ruleset").CombinedOutput()
	logs, _ := filepath.Glob(filepath.Join(envValue(l.env, "MVM_STATE_DIR"), "networks", "*.dns.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		out = append(out, "\n"+f+":\n"+string(b)...)
	}
	return string(out)
}

// dnsLog is the log of network name's DNS server, polled for a few seconds
// while it catches up (it reports drops every 2s).
func (l *netLab) dnsLog(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(envValue(l.env, "MVM_STATE_DIR"), "networks", name+".dns.log")
	var b []byte
	for i := 0; i < 20; i++ {
		b, _ = os.ReadFile(path)
		if strings.Contains(string(b), "egress: dropped") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return string(b)
}

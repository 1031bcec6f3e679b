package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	dockerbe "github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/dockerapi"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
)

// dockerOrSkip returns a client for the host's daemon, or skips the test
// naming what is missing.
func dockerOrSkip(t *testing.T) *dockerapi.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Docker daemon (skipped with -short)")
	}
	c, err := dockerapi.New()
	if err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Do(ctx, http.MethodGet, "/_ping", nil, nil, "", nil); err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("needs debugfs (e2fsprogs)")
	}
	return c
}

// dockerTestManager is a Manager on temp dirs with the agent and the
// minimal image built. Its networks are user mode (no host bridge, no
// address outside Docker's own networks) with no DNS server of ours.
func dockerTestManager(t *testing.T, ctx context.Context) *Manager {
	t.Helper()
	tmp := t.TempDir()
	agent := filepath.Join(tmp, "mvm-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", agent, "github.com/mvm-dev/mvm/cmd/mvm-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	t.Setenv("MVM_AGENT_BIN", agent)
	dirs := paths.Dirs{Cache: filepath.Join(tmp, "cache"), Config: filepath.Join(tmp, "config"),
		State: filepath.Join(tmp, "state"), Share: filepath.Join(tmp, "share")}
	if _, err := image.Ensure(ctx, "minimal", image.BuildOptions{CacheDir: dirs.ImagesDir(), AgentPath: agent, Arch: runtime.GOARCH}); err != nil {
		t.Skipf("needs the minimal image to build (busybox, mkfs.ext4): %v", err)
	}
	m := New(dirs, &config.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	nm := m.Networks()
	nm.Privileged = func() bool { return false }
	nm.StartDNS = nil
	return m
}

// dockerObjects lists the containers and Docker networks (by name) among
// want that exist.
func dockerObjects(t *testing.T, c *dockerapi.Client, kind string, want []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var left []string
	for _, name := range want {
		err := c.Do(ctx, http.MethodGet, "/"+kind+"/"+url.PathEscape(name)+"/json", nil, nil, "", nil)
		if kind == "networks" {
			err = c.Do(ctx, http.MethodGet, "/networks/"+url.PathEscape(name), nil, nil, "", nil)
		}
		switch {
		case err == nil:
			left = append(left, name)
		case !dockerapi.IsStatus(err, http.StatusNotFound):
			t.Errorf("inspect %s %s: %v", kind, name, err)
		}
	}
	return left
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestDockerNetworksReal drives docker-backend VMs on mvm networks through
// the Manager: names resolve within a network, other networks cannot
// connect, -p answers on loopback, an internal network has no way out,
// none has no NIC, and rm plus network rm leave nothing behind.
func TestDockerNetworksReal(t *testing.T) {
	dc := dockerOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := dockerTestManager(t, ctx)
	nm := m.Networks()

	nets := []string{"lab", "other", "sealed", network.DefaultName}
	vms := []string{"a", "b", "c", "d", "e", "f"}
	var containers, dockerNets []string
	for _, vm := range vms {
		containers = append(containers, dockerbe.ContainerName(vm, m.Store.Dir(vm)))
	}
	for _, n := range nets {
		dockerNets = append(dockerNets, nm.DockerNetworkName(n))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range containers {
			_ = dc.Do(ctx, http.MethodDelete, "/containers/"+c, url.Values{"force": {"1"}}, nil, "", nil)
		}
		for _, n := range dockerNets {
			_ = dc.Do(ctx, http.MethodDelete, "/networks/"+n, nil, nil, "", nil)
		}
	})

	for _, o := range []network.CreateOptions{{Name: "lab"}, {Name: "other"}, {Name: "sealed", Internal: true}} {
		if _, err := nm.Create(ctx, o); err != nil {
			t.Fatalf("create network %s: %v", o.Name, err)
		}
	}
	port := freePort(t)
	ups := []UpOptions{
		{Name: "a", Network: "lab"},
		{Name: "b", Network: "lab", Publish: []string{fmt.Sprintf("127.0.0.1:%d:80", port)}},
		{Name: "c", Network: "other"},
		{Name: "d", Network: "sealed"},
		{Name: "e"}, // default
		{Name: "f", Network: network.ModeNone},
	}
	start := time.Now()
	for _, o := range ups {
		o.Image, o.Backend, o.BootTimeout = "minimal", "docker", 30*time.Second
		if _, err := m.Up(ctx, o); err != nil {
			t.Fatalf("up %s: %v", o.Name, err)
		}
	}
	t.Logf("%d VMs up in %v", len(ups), time.Since(start))

	run := func(vm, script string) (string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ex, err := m.Exec(ectx, vm, proto.ExecRequest{Argv: []string{"sh", "-c", script}}, nil, &out, &errb)
		if err != nil {
			t.Fatalf("exec in %s: %v", vm, err)
		}
		return out.String() + errb.String(), ex.Code
	}

	// The address Docker gave each container is recorded for ls, inspect
	// and network inspect.
	addr := map[string]string{}
	for _, vm := range []string{"a", "b", "c", "d", "e"} {
		rec, err := m.Store.Get(vm)
		if err != nil {
			t.Fatal(err)
		}
		n, err := nm.Get(rec.Net.Network)
		if err != nil {
			t.Fatal(err)
		}
		at := n.Attached[vm]
		if rec.Net.Mode != network.ModeDocker || rec.Net.IP == "" || rec.Net.MAC == "" || at == nil || at.IP != rec.Net.IP || at.MAC != rec.Net.MAC {
			t.Fatalf("VM %s: rec.Net %+v, attachment %+v", vm, rec.Net, at)
		}
		if n.DockerName != nm.DockerNetworkName(n.Name) || n.DockerID == "" {
			t.Errorf("network %s: docker name %q id %q", n.Name, n.DockerName, n.DockerID)
		}
		if p := netip.MustParsePrefix(n.Subnet); p.Contains(netip.MustParseAddr(rec.Net.IP)) {
			t.Errorf("VM %s got %s inside the record's own subnet %s", vm, rec.Net.IP, n.Subnet)
		}
		out, _ := run(vm, "ip -4 addr show")
		if !strings.Contains(out, rec.Net.IP+"/") {
			t.Errorf("VM %s: recorded %s, ip addr shows:\n%s", vm, rec.Net.IP, out)
		}
		addr[vm] = rec.Net.IP
	}
	if rec, _ := m.Store.Get("b"); !slices.Equal(rec.Net.Publish, []string{fmt.Sprintf("127.0.0.1:%d:80/tcp", port)}) {
		t.Errorf("b publishes %v", rec.Net.Publish)
	}
	if rec, _ := m.Store.Get("e"); rec.Net.Network != network.DefaultName {
		t.Errorf("e is on %q, want the default network", rec.Net.Network)
	}

	// b serves HTTP; busybox httpd daemonizes, so exec returns.
	if out, code := run("b", "mkdir -p /www && echo hi >/www/index.html && httpd -p 80 -h /www"); code != 0 {
		t.Fatalf("start httpd in b: %d %s", code, out)
	}
	// Same network: by name and by name.network.
	if out, code := run("a", "ping -c1 -W3 b"); code != 0 {
		t.Errorf("a cannot ping b: %d\n%s", code, out)
	}
	for _, name := range []string{"b", "b.lab"} {
		// busybox wget's own -T crashes (1.35): timeout(1) bounds it.
		if out, code := run("a", "timeout 5 wget -q -O- http://"+name+"/"); code != 0 || strings.TrimSpace(out) != "hi" {
			t.Errorf("a: wget http://%s/: %d %q", name, code, out)
		}
	}
	// Another network: not even by address.
	if out, code := run("c", "nc -w 2 "+addr["b"]+" 80 </dev/null"); code == 0 {
		t.Errorf("c (network other) reached b at %s: %q", addr["b"], out)
	}
	if out, code := run("c", "ping -c1 -W2 b"); code == 0 {
		t.Errorf("c (network other) resolved and reached b: %q", out)
	}
	// The published port answers on the host's loopback.
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Errorf("published port: %v", err)
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "hi" {
			t.Errorf("published port answered %q", body)
		}
	}
	// Internal: no route out; an ordinary network has one.
	if out, _ := run("d", "ip route"); strings.Contains(out, "default") {
		t.Errorf("internal network's VM has a default route:\n%s", out)
	}
	if out, _ := run("a", "ip route"); !strings.Contains(out, "default") {
		t.Errorf("VM a has no default route:\n%s", out)
	}
	// none: lo only.
	if out, _ := run("f", "ip -o link show | grep -v ': lo:' | wc -l"); strings.TrimSpace(out) != "0" {
		t.Errorf("VM f (--network none) has links besides lo: %q", out)
	}
	// The agent left the NIC to Docker.
	if out, _ := run("a", "cat /etc/resolv.conf"); !strings.Contains(out, "127.0.0.11") {
		t.Errorf("a's resolv.conf is not Docker's:\n%s", out)
	}

	// A network in use is not removed.
	if _, err := nm.Remove(ctx, "lab", false, nil); !errors.Is(err, network.ErrInUse) {
		t.Errorf("network rm lab with VMs attached: %v, want ErrInUse", err)
	}
	for _, vm := range vms {
		if err := m.Remove(ctx, vm, true); err != nil {
			t.Errorf("rm %s: %v", vm, err)
		}
	}
	if left := dockerObjects(t, dc, "containers", containers); len(left) > 0 {
		t.Errorf("containers left after rm: %v", left)
	}
	for _, n := range nets {
		if _, err := nm.Remove(ctx, n, false, nil); err != nil {
			t.Errorf("network rm %s: %v", n, err)
		}
	}
	if left := dockerObjects(t, dc, "networks", dockerNets); len(left) > 0 {
		t.Errorf("docker networks left after network rm: %v", left)
	}
	if left, _ := nm.List(); len(left) > 0 {
		t.Errorf("network records left: %v", left)
	}
	if _, err := m.Store.Get("a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record of a after rm: %v", err)
	}
}

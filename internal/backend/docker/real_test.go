package docker

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
)

// realEngine returns the host's daemon, or skips the test naming what is missing.
func realEngine(t *testing.T) *engine {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Docker daemon (skipped with -short)")
	}
	e, err := newEngine()
	if err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	if err := e.available(context.Background()); err != nil {
		t.Skipf("needs a Docker daemon: %v", err)
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("needs debugfs (e2fsprogs)")
	}
	return e
}

// buildMinimal builds the agent and the minimal image into a temp cache.
func buildMinimal(t *testing.T, ctx context.Context) *image.Artifacts {
	t.Helper()
	tmp := t.TempDir()
	agent := filepath.Join(tmp, "mvm-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", agent, "github.com/mvm-dev/mvm/cmd/mvm-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	art, err := image.Ensure(ctx, "minimal", image.BuildOptions{CacheDir: filepath.Join(tmp, "images"), AgentPath: agent, Arch: runtime.GOARCH})
	if err != nil {
		t.Skipf("needs the minimal image to build (kernel, busybox, mkfs.ext4): %v", err)
	}
	return art
}

// containersIn lists containers (any state) labelled with dir.
func containersIn(t *testing.T, e *engine, dir string) []string {
	t.Helper()
	var out []struct {
		Names []string `json:"Names"`
	}
	f := `{"label":["` + LabelDir + `=` + dir + `"]}`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.do(ctx, http.MethodGet, "/containers/json", url.Values{"all": {"1"}, "filters": {f}}, nil, "", &out); err != nil {
		t.Fatalf("list containers: %v", err)
	}
	var names []string
	for _, c := range out {
		names = append(names, c.Names...)
	}
	return names
}

func waitReady(t *testing.T, ctx context.Context, ac *client.Client, h *Handle) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		hr, err := ac.Health(hctx)
		cancel()
		if err == nil && hr.Ready {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(h.dir, runDir, consoleLog))
			t.Fatalf("agent not ready: %v %+v\nconsole:\n%s", err, hr, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRealDocker(t *testing.T) {
	e := realEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	art := buildMinimal(t, ctx)

	dir := t.TempDir()
	t.Cleanup(func() {
		for _, n := range containersIn(t, e, dir) {
			_ = e.remove(context.Background(), strings.TrimPrefix(n, "/"))
		}
	})
	spec := backend.Spec{
		Name: "dkt", Dir: dir, RootImage: art.Rootfs, ImageDigest: art.Digest,
		CPUs: 1, MemoryMiB: 128, SerialLog: filepath.Join(dir, "serial.log"),
		Guest: &guestcfg.Config{Version: 1, Name: "dkt", Hostname: "dkt", Env: []string{"MVM_TEST=1"}},
	}
	wrap := testKeys(t, spec.Guest)
	start := time.Now()
	h, err := e.start(ctx, spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	ac := client.New(h.DialAgent, client.WithWrap(wrap))
	// Without the host key nobody gets in.
	if _, err := client.New(h.DialAgent, client.WithTimeout(5*time.Second)).Health(ctx); err == nil {
		t.Error("agent answered an unauthenticated client")
	}
	waitReady(t, ctx, ac, h)
	t.Logf("first up (with import if not cached): %v", time.Since(start))

	if st, err := h.State(ctx); err != nil || st != backend.StateRunning {
		t.Fatalf("state = %v, %v; want running", st, err)
	}
	if h.PID() <= 0 {
		t.Errorf("PID() = %d, want the container's host pid", h.PID())
	}

	var stdout, stderr bytes.Buffer
	ex, err := ac.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", "echo out $(hostname) $MVM_TEST; echo err >&2; exit 3"}}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if ex.Code != 3 || stdout.String() != "out dkt 1\n" || stderr.String() != "err\n" {
		t.Fatalf("exec: code %d stdout %q stderr %q", ex.Code, stdout.String(), stderr.String())
	}

	// --cpus / --memory became container limits.
	var info struct {
		HostConfig struct {
			NanoCpus int64
			Memory   int64
		}
	}
	if err := e.do(ctx, http.MethodGet, "/containers/"+h.Container()+"/json", nil, nil, "", &info); err != nil {
		t.Fatal(err)
	}
	if info.HostConfig.NanoCpus != 1e9 || info.HostConfig.Memory != 128<<20 {
		t.Errorf("limits: %+v, want 1 cpu, 128 MiB", info.HostConfig)
	}

	// Pause freezes the agent; resume brings it back.
	if err := h.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(ctx); st != backend.StatePaused {
		t.Fatalf("after pause: %v", st)
	}
	pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := ac.Health(pctx); err == nil {
		t.Error("health answered while paused")
	}
	pcancel()
	if err := h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, ac, h)

	// The agent deleted the config (it holds the guest's private key).
	if left, _ := filepath.Glob(filepath.Join(dir, configParent, "*", guestcfg.FileName)); len(left) > 0 {
		t.Errorf("mvm.json still on the host after the agent read it: %v", left)
	}

	// The guest plants a link to a host file where its config was; the next
	// start must not write the config (the guest's key) through it.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("host data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ex, err := ac.Exec(ctx, proto.ExecRequest{Argv: []string{"ln", "-s", victim, GuestConfigDir + "/" + guestcfg.FileName}}, nil, &stdout, &stderr); err != nil || ex.Code != 0 {
		t.Fatalf("plant link: %v %+v %s", err, ex, stderr.String())
	}

	// The console log reaches the spec's serial log.
	if b, err := os.ReadFile(spec.SerialLog); err != nil || !bytes.Contains(b, []byte("ready: serving on unix:")) {
		t.Errorf("serial log: %v\n%s", err, b)
	}

	// Another process can operate it from the VM dir alone.
	h2, err := (&Backend{}).Open(dir)
	if err != nil {
		t.Fatal(err)
	}

	// Graceful stop: the agent shuts down, the container exits and is gone.
	if err := ac.Shutdown(ctx, false); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := h2.Stop(ctx, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if st, err := h2.State(ctx); err != nil || st != backend.StateStopped {
		t.Fatalf("after stop: %v %v", st, err)
	}
	waitNoContainers(t, e, dir)
	if b, _ := os.ReadFile(spec.SerialLog); !bytes.Contains(b, []byte("exiting")) {
		t.Errorf("console log lacks the shutdown:\n%s", b)
	}

	// Second start reuses the image; Remove of a running VM leaves nothing.
	wrap = testKeys(t, spec.Guest)
	start = time.Now()
	h3, err := e.start(ctx, spec)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	waitReady(t, ctx, client.New(h3.DialAgent, client.WithWrap(wrap)), h3)
	t.Logf("up with cached image: %v", time.Since(start))
	if b, err := os.ReadFile(victim); err != nil || string(b) != "host data\n" {
		t.Errorf("restart wrote through the guest's link: victim = %q, %v", b, err)
	}
	if err := h3.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	waitNoContainers(t, e, dir)
	if err := h3.Remove(ctx); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := net.Dial("unix", h3.SocketPath()); err == nil {
		t.Error("agent socket still answers after remove")
	}
}

func waitNoContainers(t *testing.T, e *engine, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := containersIn(t, e, dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers left: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testKeys gives cfg a fresh guest key and host key and returns the host's
// client wrap, as vm.provisionAgentKeys and vm.agentAuth do.
func testKeys(t *testing.T, cfg *guestcfg.Config) func(net.Conn) (net.Conn, error) {
	t.Helper()
	hostPriv, hostPub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	guestPriv, guestPub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HostPublicKey, err = auth.MarshalPublicKey(hostPub); err != nil {
		t.Fatal(err)
	}
	if cfg.GuestPrivateKey, err = auth.MarshalPrivateKey(guestPriv); err != nil {
		t.Fatal(err)
	}
	tc, err := auth.ClientConfig(hostPriv, guestPub)
	if err != nil {
		t.Fatal(err)
	}
	return auth.ClientWrap(tc)
}

// Command docker measures the Docker backend in one run:
//
//   - exec: `mvmctl exec NAME -- true` against `docker exec C true` on the
//     same running container (goal: ratio ≤ 0.8);
//   - up:   `mvmctl up --backend docker` with the image already imported.
//
// With -direct it needs no mvmctl: it starts the container through the
// backend package and times an agent exec over the unix socket (what
// `mvmctl exec` does minus process start-up) against `docker exec`.
// Run it with bench/docker/run.sh.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
)

func main() {
	// VMs are removed by deferred calls: a closed stdout (| head) or Ctrl-C
	// must not end us before they have run (the mvmctl children get SIGINT
	// themselves, fail, and the run unwinds).
	signal.Ignore(syscall.SIGPIPE)
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM)
	n := flag.Int("n", 20, "iterations of each exec")
	ups := flag.Int("ups", 3, "iterations of up")
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary")
	agent := flag.String("agent", "bin/mvm-agent", "static mvm-agent (for -direct)")
	direct := flag.Bool("direct", false, "drive the backend in-process instead of mvmctl")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	var (
		res result
		err error
	)
	if *direct {
		res, err = runDirect(*agent, *n)
	} else {
		res, err = runCLI(*mvmctl, *n, *ups)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/docker:", err)
		os.Exit(1)
	}
	res.print(*asJSON)
}

type result struct {
	Mode         string  `json:"mode"`
	MvmExecMS    float64 `json:"mvm_exec_median_ms"`
	DockerExecMS float64 `json:"docker_exec_median_ms"`
	Ratio        float64 `json:"exec_ratio"`
	UpMS         float64 `json:"up_median_ms,omitempty"`
	N            int     `json:"n"`
}

func (r result) print(asJSON bool) {
	if asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	what := "mvmctl exec NAME -- true"
	if r.Mode == "direct" {
		what = "agent exec over unix socket"
	}
	fmt.Printf("%-32s median %7.1f ms\n", what, r.MvmExecMS)
	fmt.Printf("%-32s median %7.1f ms\n", "docker exec C true", r.DockerExecMS)
	fmt.Printf("ratio %.2f (goal <= 0.80), n=%d\n", r.Ratio, r.N)
	switch {
	case r.Mode == "direct":
		fmt.Printf("%-32s %7.1f ms (one start; includes the import unless the image was cached)\n", "backend start to agent ready", r.UpMS)
	case r.UpMS > 0:
		fmt.Printf("%-32s median %7.1f ms (image cached)\n", "mvmctl up --backend docker", r.UpMS)
	}
}

func median(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)/2].Microseconds()) / 1000
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	t0 := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return time.Since(t0), nil
}

// containerOf finds the container of VM name by its label.
func containerOf(name, dir string) (string, error) {
	out, err := exec.Command("docker", "ps", "--filter", "label="+docker.LabelDir+"="+dir, "--format", "{{.Names}}").Output()
	if err != nil {
		return "", fmt.Errorf("docker ps: %w", err)
	}
	c := strings.TrimSpace(string(out))
	if c == "" {
		return "", fmt.Errorf("no running container for VM %s", name)
	}
	return c, nil
}

func runCLI(mvmctl string, n, ups int) (result, error) {
	res := result{Mode: "cli", N: n}
	root, err := os.MkdirTemp("", "mvmdk")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(root)
	env := append(os.Environ(), "MVM_STATE_DIR="+filepath.Join(root, "state"), "MVM_CONFIG_DIR="+filepath.Join(root, "config"))
	if os.Getenv("MVM_CACHE_DIR") == "" {
		env = append(env, "MVM_CACHE_DIR="+filepath.Join(root, "cache"))
	}
	mvm := func(args ...string) (time.Duration, error) {
		t0 := time.Now()
		cmd := exec.Command(mvmctl, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("mvmctl %v: %v\n%s", args, err, out)
		}
		return time.Since(t0), nil
	}
	// Warm: build and import the image once.
	if _, err := mvm("up", "--backend", "docker", "--name", "dk-warm"); err != nil {
		return res, err
	}
	defer mvm("rm", "-f", "dk-warm")
	var upT []time.Duration
	for i := 0; i < ups; i++ {
		name := fmt.Sprintf("dk-up-%d", i)
		d, err := mvm("up", "--backend", "docker", "--name", name)
		if err != nil {
			return res, err
		}
		upT = append(upT, d)
		if _, err := mvm("rm", "-f", name); err != nil {
			return res, err
		}
	}
	res.UpMS = median(upT)

	c, err := containerOf("dk-warm", filepath.Join(root, "state", "vms", "dk-warm"))
	if err != nil {
		return res, err
	}
	var mvmT, dockT []time.Duration
	for i := 0; i < n; i++ { // interleaved: both see the same host load
		d, err := mvm("exec", "dk-warm", "--", "true")
		if err != nil {
			return res, err
		}
		mvmT = append(mvmT, d)
		if d, err = timeCmd("docker", "exec", c, "true"); err != nil {
			return res, err
		}
		dockT = append(dockT, d)
	}
	res.MvmExecMS, res.DockerExecMS = median(mvmT), median(dockT)
	res.Ratio = res.MvmExecMS / res.DockerExecMS
	return res, nil
}

func runDirect(agent string, n int) (res result, err error) {
	res = result{Mode: "direct", N: n}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := os.MkdirTemp("", "mvmdk")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(root)
	art, err := image.Ensure(ctx, "minimal", image.BuildOptions{CacheDir: filepath.Join(root, "images"), AgentPath: agent, Arch: runtime.GOARCH})
	if err != nil {
		return res, err
	}
	be, err := backend.Get(docker.Name)
	if err != nil {
		return res, err
	}
	dir := filepath.Join(root, "vm")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return res, err
	}
	spec := backend.Spec{Name: "dkbench", Dir: dir, RootImage: art.Rootfs, ImageDigest: art.Digest,
		CPUs: 1, MemoryMiB: 128, SerialLog: filepath.Join(dir, "serial.log"),
		Guest: &guestcfg.Config{Version: 1, Name: "dkbench", Hostname: "dkbench"}}
	wrap, err := provisionKeys(spec.Guest)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	h, err := be.Start(ctx, spec)
	if err != nil {
		return res, err
	}
	defer h.Kill(context.Background())
	ac := client.New(func(ctx context.Context) (net.Conn, error) { return h.DialAgent(ctx) }, client.WithWrap(wrap))
	for {
		hctx, c := context.WithTimeout(ctx, time.Second)
		hr, err := ac.Health(hctx)
		c()
		if err == nil && hr.Ready {
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("agent not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.UpMS = float64(time.Since(t0).Microseconds()) / 1000
	cname, err := containerOf("dkbench", dir)
	if err != nil {
		return res, err
	}
	var mvmT, dockT []time.Duration
	for i := 0; i < n; i++ {
		t := time.Now()
		// What `mvmctl exec` does per call: a State query, then the exec.
		if _, err := h.State(ctx); err != nil {
			return res, err
		}
		ex, err := ac.Exec(ctx, proto.ExecRequest{Argv: []string{"true"}}, nil, nil, nil)
		if err != nil || ex.Code != 0 {
			return res, fmt.Errorf("exec true: %+v %v", ex, err)
		}
		mvmT = append(mvmT, time.Since(t))
		d, err := timeCmd("docker", "exec", cname, "true")
		if err != nil {
			return res, err
		}
		dockT = append(dockT, d)
	}
	res.MvmExecMS, res.DockerExecMS = median(mvmT), median(dockT)
	res.Ratio = res.MvmExecMS / res.DockerExecMS
	return res, nil
}

// provisionKeys gives gc a fresh guest key and a throwaway host key, as
// mvmctl does, and returns the host side's TLS wrap.
func provisionKeys(gc *guestcfg.Config) (func(net.Conn) (net.Conn, error), error) {
	hostPriv, hostPub, err := auth.NewGuestKey()
	if err != nil {
		return nil, err
	}
	guestPriv, guestPub, err := auth.NewGuestKey()
	if err != nil {
		return nil, err
	}
	if gc.HostPublicKey, err = auth.MarshalPublicKey(hostPub); err != nil {
		return nil, err
	}
	if gc.GuestPrivateKey, err = auth.MarshalPrivateKey(guestPriv); err != nil {
		return nil, err
	}
	tc, err := auth.ClientConfig(hostPriv, guestPub)
	if err != nil {
		return nil, err
	}
	return auth.ClientWrap(tc), nil
}

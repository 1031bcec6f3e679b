// Command docker measures the Docker backend in one run:
//
//   - exec: `mvmctl exec NAME -- true` against `docker exec C true` on the
//     same running container (internal/bench's figure, as `mvmctl bench
//     exec` prints it);
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/bench"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
)

func main() {
	n := flag.Int("n", 20, "iterations of each exec")
	ups := flag.Int("ups", 3, "iterations of up")
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary")
	agent := flag.String("agent", "bin/mvm-agent", "static mvm-agent (for -direct)")
	direct := flag.Bool("direct", false, "drive the backend in-process instead of mvmctl")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	// Ctrl-C cancels the run; deferred cleanups still remove every VM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *direct {
		var res result
		if res, err = runDirect(ctx, *agent, *n); err == nil {
			res.print(*asJSON)
		}
	} else {
		err = runCLI(ctx, *mvmctl, *n, *ups, *asJSON)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/docker:", err)
		os.Exit(1)
	}
}

// runCLI prints bench's Docker exec figure and the median of ups runs of
// up with the image imported.
func runCLI(ctx context.Context, mvmctl string, n, ups int, asJSON bool) (err error) {
	if mvmctl, err = filepath.Abs(mvmctl); err != nil {
		return err
	}
	e, err := bench.NewEnv(mvmctl)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// First: the figure, whose up also builds and imports the image.
	fig, err := e.DockerExec(ctx, bench.Options{Mvmctl: mvmctl, N: 1, ExecN: n})
	if err != nil {
		return err
	}
	var upT []time.Duration
	for i := 0; i < ups && fig.Skipped == ""; i++ {
		name := fmt.Sprintf("dk-up-%d", i)
		d, err := e.Up(ctx, name, "--backend", "docker", "--network", "none")
		if err != nil {
			return err
		}
		upT = append(upT, d)
		if err := e.Remove(ctx, name); err != nil {
			return err
		}
	}
	up := bench.NewSeries("mvmctl up --backend docker (image imported)", upT)
	rep := &bench.Report{Mvmctl: mvmctl, Iterations: ups, ExecIterations: n, Figures: []bench.Figure{fig}}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(struct {
			*bench.Report
			Up *bench.Series `json:"up"`
		}{rep, up})
	}
	if err := bench.WriteText(os.Stdout, rep); err != nil {
		return err
	}
	if len(upT) > 0 {
		fmt.Printf("%s: p50 %.1f ms (n=%d)\n", up.What, time.Duration(up.P50).Seconds()*1000, up.N)
	}
	return nil
}

// result is -direct's.
type result struct {
	MvmExecMS    float64 `json:"agent_exec_median_ms"`
	DockerExecMS float64 `json:"docker_exec_median_ms"`
	Ratio        float64 `json:"exec_ratio"`
	UpMS         float64 `json:"start_ms"`
	N            int     `json:"n"`
}

func (r result) print(asJSON bool) {
	if asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Printf("%-32s median %7.1f ms\n", "agent exec over unix socket", r.MvmExecMS)
	fmt.Printf("%-32s median %7.1f ms\n", "docker exec C true", r.DockerExecMS)
	fmt.Printf("ratio %.2f (target <= %.2f for mvmctl exec), n=%d\n", r.Ratio, bench.DockerTarget, r.N)
	fmt.Printf("%-32s %7.1f ms (one start; includes the import unless the image was cached)\n", "backend start to agent ready", r.UpMS)
}

func median(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	slices.Sort(s)
	return float64(bench.Percentile(s, 50).Microseconds()) / 1000
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

func runDirect(ctx context.Context, agent string, n int) (res result, err error) {
	res = result{N: n}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
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

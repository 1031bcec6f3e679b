// Command template measures moving a template with a snapshot through an
// OCI registry against a standard OCI client (oras) moving the same layer
// bytes to the same registry in the same run, and `up --template` from a
// freshly pulled template against a cold boot and a local restore. It
// starts Debian's docker-registry on loopback; nothing leaves the machine.
// Run it with `make bench` (or bench/template/run.sh).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	signal.Ignore(syscall.SIGPIPE)
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM)
	n := flag.Int("n", 3, "iterations of each")
	mvmctl := flag.String("mvmctl", "bin/mvmctl", "mvmctl binary")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	if err := run(*mvmctl, *n, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "bench/template:", err)
		os.Exit(1)
	}
}

// host is one mvm installation (its own dirs), as a clean host would be.
type host struct {
	mvmctl string
	env    []string
	dir    string
}

func newHost(mvmctl, root, name string, sharedCache bool) (*host, error) {
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o700); err != nil {
		return nil, err
	}
	// Pinned to QEMU without a NIC: what is measured must not depend on
	// what auto-selection picks here.
	if err := os.WriteFile(filepath.Join(dir, "config", "config.toml"), []byte("default_backend = \"qemu\"\ndefault_network = \"none\"\n"), 0o600); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "MVM_STATE_DIR="+filepath.Join(dir, "state"), "MVM_CONFIG_DIR="+filepath.Join(dir, "config"),
		"MVM_SHARE_DIR="+filepath.Join(dir, "share"))
	if !sharedCache || os.Getenv("MVM_CACHE_DIR") == "" {
		env = append(env, "MVM_CACHE_DIR="+filepath.Join(dir, "cache"))
	}
	return &host{mvmctl: mvmctl, env: env, dir: dir}, nil
}

func (h *host) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.mvmctl, args...)
	cmd.Env = h.env
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("mvmctl %v: %v\n%s%s", args, err, out, stderr)
	}
	return string(out), nil
}

func (h *host) timed(args ...string) (time.Duration, string, error) {
	began := time.Now()
	out, err := h.run(args...)
	return time.Since(began), out, err
}

func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	gp, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gp)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: run scripts/setup.sh", name)
}

// startRegistry runs docker-registry on a free loopback port.
func startRegistry(root string) (addr string, stop func(), err error) {
	bin, err := tool("docker-registry")
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = l.Addr().String()
	l.Close()
	cfg := filepath.Join(root, "registry.yml")
	y := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(root, "registry"), addr)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr + "/v2/"); err == nil {
			r.Body.Close()
			return addr, stop, nil
		}
	}
	stop()
	return "", nil, errors.New("docker-registry did not answer within 20s")
}

type figures struct {
	Runs            int     `json:"runs"`
	ArtifactMiB     float64 `json:"artifact_mib"`
	PushMiBs        float64 `json:"push_mib_s"`
	OrasPushMiBs    float64 `json:"oras_push_mib_s"`
	PushRatio       float64 `json:"push_ratio"`
	PullMiBs        float64 `json:"pull_mib_s"`
	OrasPullMiBs    float64 `json:"oras_pull_mib_s"`
	PullRatio       float64 `json:"pull_ratio"`
	ColdSecs        float64 `json:"cold_up_exec_s"`
	LocalSecs       float64 `json:"local_template_up_exec_s"`
	PulledSecs      float64 `json:"pulled_template_up_exec_s"`
	LocalToCold     float64 `json:"local_to_cold"`
	PulledToCold    float64 `json:"pulled_to_cold"`
	PulledPerLocal  float64 `json:"pulled_per_local"`
	PushTargetMet   bool    `json:"push_target_met"`
	PullTargetMet   bool    `json:"pull_target_met"`
	UpTargetMet     bool    `json:"up_target_met"`
	RegistryAddress string  `json:"registry"`
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func run(mvmctl string, n int, asJSON bool) error {
	if n < 1 {
		n = 1
	}
	oras, err := tool("oras")
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "mvmtb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	reg, stopReg, err := startRegistry(root)
	if err != nil {
		return err
	}
	defer stopReg()
	a, err := newHost(mvmctl, root, "a", true)
	if err != nil {
		return err
	}
	if _, err := a.run("template", "create", "bt", "--from", "minimal", "--memory", "128M"); err != nil {
		return err
	}
	if _, err := a.run("template", "build", "bt", "--snapshot"); err != nil {
		return err
	}
	var push, opush, pull, opull, cold, local, pulled []time.Duration
	var artifactBytes int64
	defer func() { _, _ = a.run("rm", "-f", "bt-cold", "bt-local") }()
	for i := 0; i < n; i++ {
		// Cold boot and a local restore, the baselines of up --template.
		d, _, err := a.timed("up", "--name", "bt-cold")
		if err != nil {
			return err
		}
		e, _, err := a.timed("exec", "bt-cold", "--", "true")
		if err != nil {
			return err
		}
		cold = append(cold, d+e)
		if _, err := a.run("rm", "-f", "bt-cold"); err != nil {
			return err
		}
		d, _, err = a.timed("up", "--template", "bt", "--name", "bt-local")
		if err != nil {
			return err
		}
		e, _, err = a.timed("exec", "bt-local", "--", "true")
		if err != nil {
			return err
		}
		local = append(local, d+e)
		if _, err := a.run("rm", "-f", "bt-local"); err != nil {
			return err
		}

		// Ours: push to a fresh repository, pull on a clean host, boot.
		ref := fmt.Sprintf("%s/bench/mvm%d:v1", reg, i)
		d, out, err := a.timed("template", "push", "bt", ref, "--insecure", "--no-sign", "--json")
		if err != nil {
			return err
		}
		var pr struct {
			Size int64 `json:"size"`
		}
		if err := json.Unmarshal([]byte(out), &pr); err != nil {
			return fmt.Errorf("push output: %w", err)
		}
		artifactBytes = pr.Size
		push = append(push, d)
		b, err := newHost(mvmctl, root, fmt.Sprintf("b%d", i), false)
		if err != nil {
			return err
		}
		d, _, err = b.timed("template", "pull", ref, "--insecure")
		if err != nil {
			return err
		}
		pull = append(pull, d)
		d, _, err = b.timed("up", "--template", "bt", "--name", "bt-pulled")
		if err != nil {
			return err
		}
		e, _, err = b.timed("exec", "bt-pulled", "--", "true")
		if err != nil {
			return err
		}
		pulled = append(pulled, d+e)
		if _, err := b.run("rm", "-f", "bt-pulled"); err != nil {
			return err
		}

		// oras: the same layer blobs (from the clean host's blob cache)
		// to another fresh repository, and back.
		blobs, err := filepath.Glob(filepath.Join(b.dir, "cache", "blobs", "sha256", "*"))
		if err != nil {
			return err
		}
		args := []string{"push", "--plain-http", "--no-tty", fmt.Sprintf("%s/bench/oras%d:v1", reg, i)}
		for _, f := range blobs {
			if strings.Contains(filepath.Base(f), ".") {
				continue // locks and partials
			}
			args = append(args, filepath.Base(f)+":application/vnd.mvm.template.file.v1")
		}
		began := time.Now()
		cmd := exec.Command(oras, args...)
		cmd.Dir = filepath.Dir(blobs[0])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("oras push: %v\n%s", err, out)
		}
		opush = append(opush, time.Since(began))
		began = time.Now()
		cmd = exec.Command(oras, "pull", "--plain-http", "--no-tty", "-o", filepath.Join(root, fmt.Sprintf("oras-out%d", i)), fmt.Sprintf("%s/bench/oras%d:v1", reg, i))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("oras pull: %v\n%s", err, out)
		}
		opull = append(opull, time.Since(began))
		_ = os.RemoveAll(b.dir)
		_ = os.RemoveAll(filepath.Join(root, fmt.Sprintf("oras-out%d", i)))
	}
	mib := float64(artifactBytes) / (1 << 20)
	rate := func(d time.Duration) float64 { return mib / d.Seconds() }
	f := figures{
		Runs: n, ArtifactMiB: mib, RegistryAddress: reg,
		PushMiBs: rate(median(push)), OrasPushMiBs: rate(median(opush)),
		PullMiBs: rate(median(pull)), OrasPullMiBs: rate(median(opull)),
		ColdSecs: median(cold).Seconds(), LocalSecs: median(local).Seconds(), PulledSecs: median(pulled).Seconds(),
	}
	f.PushRatio, f.PullRatio = f.PushMiBs/f.OrasPushMiBs, f.PullMiBs/f.OrasPullMiBs
	f.LocalToCold, f.PulledToCold = f.LocalSecs/f.ColdSecs, f.PulledSecs/f.ColdSecs
	f.PulledPerLocal = f.PulledSecs / f.LocalSecs
	f.PushTargetMet, f.PullTargetMet = f.PushRatio >= 0.9, f.PullRatio >= 0.9
	// "Same ratio to cold boot as a local restore": within 10% of it.
	f.UpTargetMet = f.PulledPerLocal <= 1.1
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	ok := func(b bool) string {
		if b {
			return "met"
		}
		return "MISSED"
	}
	fmt.Printf("template benchmark (%d runs each, medians; artifact %.1f MiB incl. 128 MiB RAM, zstd)\n", n, mib)
	fmt.Printf("  push  mvmctl %7.1f MiB/s  oras %7.1f MiB/s  ratio %.2f (target ≥ 0.90: %s)\n", f.PushMiBs, f.OrasPushMiBs, f.PushRatio, ok(f.PushTargetMet))
	fmt.Printf("  pull  mvmctl %7.1f MiB/s  oras %7.1f MiB/s  ratio %.2f (target ≥ 0.90: %s)\n", f.PullMiBs, f.OrasPullMiBs, f.PullRatio, ok(f.PullTargetMet))
	fmt.Printf("  up→exec  cold %.2fs  local template %.2fs (%.3f×)  pulled template %.2fs (%.3f×; %.2f× local: %s)\n",
		f.ColdSecs, f.LocalSecs, f.LocalToCold, f.PulledSecs, f.PulledToCold, f.PulledPerLocal, ok(f.UpTargetMet))
	return nil
}

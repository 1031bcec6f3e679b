package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/paths"
)

// Timeouts of the mvmctl calls. The first up may build the image.
const (
	upTimeout   = 15 * time.Minute
	opTimeout   = 2 * time.Minute
	killTimeout = 30 * time.Second // after SIGINT, before SIGKILL
)

// Env is one bench run's own mvm installation: state, config and share
// directories under a temp root, so the user's VMs, networks and config are
// neither read nor touched. The image cache is the caller's MVM_CACHE_DIR
// when set (a warm cache skips the image build), else one under the root.
type Env struct {
	Mvmctl string
	Dirs   paths.Dirs
	root   string
	env    []string
	accel  string // QEMU's, once a QEMU VM has run

	mu    sync.Mutex
	vms   []string // every name given to up, for Close
	pools []string // every pool made, for Close
}

// NewEnv makes the temp root. Close removes it and every VM in it.
func NewEnv(mvmctl string) (*Env, error) {
	root, err := os.MkdirTemp("", "mvmctl-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench temp dir: %w", err)
	}
	d := paths.Dirs{State: filepath.Join(root, "state"), Config: filepath.Join(root, "config"),
		Share: filepath.Join(root, "share"), Cache: os.Getenv("MVM_CACHE_DIR")}
	if d.Cache == "" || !filepath.IsAbs(d.Cache) {
		d.Cache = filepath.Join(root, "cache")
	}
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MVM_STATE_DIR", "MVM_CONFIG_DIR", "MVM_SHARE_DIR", "MVM_CACHE_DIR":
		default:
			env = append(env, kv)
		}
	}
	env = append(env, "MVM_STATE_DIR="+d.State, "MVM_CONFIG_DIR="+d.Config,
		"MVM_SHARE_DIR="+d.Share, "MVM_CACHE_DIR="+d.Cache)
	return &Env{Mvmctl: mvmctl, Dirs: d, root: root, env: env}, nil
}

// Path is a path under the temp root.
func (e *Env) Path(elem ...string) string { return filepath.Join(append([]string{e.root}, elem...)...) }

// Run runs mvmctl with args and returns its stdout. The child is in its own
// process group, so a terminal's Ctrl-C reaches only us: we cancel ctx,
// which interrupts the child (SIGINT, as a user would) and waits for it to
// unwind before the cleanup runs, killing it if it does not.
func (e *Env) Run(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Mvmctl, args...)
	cmd.Env = e.env
	// Pdeathsig: a bench killed outright does not leave an up running on.
	cmd.SysProcAttr = childAttr(syscall.SIGTERM)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = killTimeout
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return stdout.String(), fmt.Errorf("mvmctl %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Timed is Run's wall-clock time, process start-up included.
func (e *Env) Timed(ctx context.Context, timeout time.Duration, args ...string) (time.Duration, error) {
	t := time.Now()
	_, err := e.Run(ctx, timeout, args...)
	return time.Since(t), err
}

// Up runs `mvmctl up --name NAME ARGS...` and remembers the name for Close.
func (e *Env) Up(ctx context.Context, name string, args ...string) (time.Duration, error) {
	e.mu.Lock()
	e.vms = append(e.vms, name)
	e.mu.Unlock()
	return e.Timed(ctx, upTimeout, append([]string{"up", "--name", name}, args...)...)
}

// UpQEMU is Up pinned to QEMU without a NIC: auto-selection picks Docker on
// hosts without KVM, and the raw baseline has no network.
func (e *Env) UpQEMU(ctx context.Context, name string, args ...string) (time.Duration, error) {
	d, err := e.Up(ctx, name, append([]string{"--backend", "qemu", "--network", "none"}, args...)...)
	if err == nil && e.accel == "" {
		_, _ = e.qemuArgv(name) // for the report's accelerator only
	}
	return d, err
}

// ExecTrue times `mvmctl exec NAME -- true`.
func (e *Env) ExecTrue(ctx context.Context, name string) (time.Duration, error) {
	return e.Timed(ctx, opTimeout, "exec", name, "--", "true")
}

// Remove force-removes VM name.
func (e *Env) Remove(ctx context.Context, name string) error {
	_, err := e.Run(ctx, opTimeout, "rm", "-f", name)
	return err
}

// Close removes every VM of the run, whatever state it is in, then the temp
// root. It runs after a failure or an interrupt too: it ignores the run's
// context (already cancelled then) and bounds each removal instead.
func (e *Env) Close() error {
	ctx := context.Background()
	e.mu.Lock()
	names := append([]string(nil), e.vms...)
	pools := append([]string(nil), e.pools...)
	e.mu.Unlock()
	var errs []error
	// Pools first: pool rm stops the refiller, which would otherwise add
	// members behind the cleanup.
	for _, p := range pools {
		if _, err := e.Run(ctx, opTimeout, "pool", "rm", p); err != nil && !strings.Contains(err.Error(), "no such pool") {
			errs = append(errs, err)
		}
	}
	// ls also finds what a name list misses (e.g. an up that died halfway).
	if out, err := e.Run(ctx, opTimeout, "ls", "-a", "--format", "{{.Name}}"); err == nil {
		names = append(names, strings.Fields(out)...)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if err := e.Remove(ctx, n); err != nil && e.exists(n) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(e.root); err != nil {
		errs = append(errs, fmt.Errorf("remove bench dir: %w", err))
	}
	return errors.Join(errs...)
}

// exists is whether VM name still has a directory (rm of a VM that never
// got one fails, and that is no leak).
func (e *Env) exists(name string) bool {
	_, err := os.Stat(e.Dirs.VMDir(name))
	return err == nil
}

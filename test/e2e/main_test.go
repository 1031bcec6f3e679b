// Package e2e boots real VMs with the mvmctl binary. Under CI this runs QEMU
// with TCG for real; without QEMU the tests fail loudly unless MVM_E2E=skip.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	mvmctl  string // built binary
	baseEnv []string
	rootDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode (boots real VMs)")
		return 0
	}
	var err error
	// A short root keeps unix socket paths well under the 108-byte limit.
	rootDir, err = os.MkdirTemp("", "mvme2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(rootDir)
	bin := filepath.Join(rootDir, "bin")
	repo, _ := filepath.Abs("../..")
	// The foreign arch's agent sits beside mvmctl, where FindAgentFor looks
	// (arch_test.go boots a guest of that arch).
	for _, b := range []struct{ out, pkg, goarch string }{
		{"mvm-agent", "./cmd/mvm-agent", ""}, {"mvm-agent-" + foreignArch(), "./cmd/mvm-agent", foreignArch()},
		{"mvm-supervisor", "./cmd/mvm-supervisor", ""}, {"mvmctl", "./cmd/mvmctl", ""},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b.goarch != "" {
			cmd.Env = append(cmd.Env, "GOARCH="+b.goarch)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	mvmctl = filepath.Join(bin, "mvmctl")
	// The firecracker backend runs against the stand-in VMM (Firecracker's
	// API, the guest on QEMU) unless MVM_E2E_FIRECRACKER=real asks for the
	// firecracker on PATH (scripts/kvm-host-check.sh) or the caller names
	// a binary in MVM_FIRECRACKER_BIN.
	standin := filepath.Join(bin, "fcstandin")
	build := exec.Command("go", "build", "-o", standin, "./test/fcstandin")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build the firecracker stand-in: %v\n%s", err, out)
		return 1
	}
	var fcEnv []string
	if os.Getenv("MVM_E2E_FIRECRACKER") != "real" && os.Getenv("MVM_FIRECRACKER_BIN") == "" {
		fcEnv = append(fcEnv, "MVM_FIRECRACKER_BIN="+standin)
		// Run as "jailer", the stand-in is the jailer too: as root, VMs
		// run in the jailer's layout, the backend's default.
		jailer := filepath.Join(bin, "jailer")
		if err := os.Symlink("fcstandin", jailer); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		fcEnv = append(fcEnv, "MVM_JAILER_BIN="+jailer)
	}
	// The image cache may be shared between runs (CI keeps it warm); VM state
	// is always fresh.
	cache := os.Getenv("MVM_E2E_CACHE")
	if cache == "" {
		cache = filepath.Join(rootDir, "cache")
	}
	// Drills that need a VMM process (crash, snapshot) run on QEMU: make it
	// the user's default so auto-selection (Docker first on hosts without
	// usable KVM) does not change what they test. Conformance tests pass
	// --backend explicitly. VMs get no NIC unless a test asks for one:
	// network tests run inside namespaces of their own (net_test.go), so
	// no test VM ever has a route to the host's real network.
	if err := os.MkdirAll(filepath.Join(rootDir, "config"), 0o700); err == nil {
		_ = os.WriteFile(filepath.Join(rootDir, "config", "config.toml"), []byte("default_backend = \"qemu\"\ndefault_network = \"none\"\n"), 0o600)
	}
	baseEnv = append(os.Environ(),
		"MVM_CACHE_DIR="+cache,
		"MVM_STATE_DIR="+filepath.Join(rootDir, "state"),
		"MVM_CONFIG_DIR="+filepath.Join(rootDir, "config"),
		"MVM_SHARE_DIR="+filepath.Join(rootDir, "share"),
	)
	baseEnv = append(baseEnv, fcEnv...)
	code := m.Run()
	// Leave no pool behind (its refiller and members), whatever failed.
	pools := exec.Command(mvmctl, "pool", "ls", "--format", "{{.Name}}")
	pools.Env = baseEnv
	if out, err := pools.Output(); err == nil {
		for _, p := range strings.Fields(string(out)) {
			rm := exec.Command(mvmctl, "pool", "rm", p)
			rm.Env = baseEnv
			_ = rm.Run()
		}
	}
	// Leave no VM behind, whatever failed.
	cmd := exec.Command(mvmctl, "ls", "-a", "--json")
	cmd.Env = baseEnv
	if out, err := cmd.Output(); err == nil {
		var items []struct{ Name string }
		_ = json.Unmarshal(out, &items)
		for _, it := range items {
			rm := exec.Command(mvmctl, "rm", "-f", it.Name)
			rm.Env = baseEnv
			_ = rm.Run()
		}
	}
	return code
}

// result is one mvmctl invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// mvm runs mvmctl with args and a deadline.
func mvm(t *testing.T, timeout time.Duration, stdin string, args ...string) result {
	t.Helper()
	return mvmWith(t, timeout, stdin, nil, args...)
}

// mvmWith is mvm with extra environment variables.
func mvmWith(t *testing.T, timeout time.Duration, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, mvmctl, args...)
	cmd.Env = append(append([]string(nil), baseEnv...), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return runResult(t, ctx, cmd, timeout)
}

// runResult runs cmd, made with ctx, and keeps its streams and exit
// status; it fails the test if cmd cannot run or ctx (timeout) ran out.
func runResult(t *testing.T, ctx context.Context, cmd *exec.Cmd, timeout time.Duration) result {
	t.Helper()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	name := filepath.Base(cmd.Path)
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, cmd.Args[1:], err, r)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out after %s\n%s", name, cmd.Args[1:], timeout, r)
	}
	return r
}

// must runs mvmctl and fails the test on a non-zero exit.
func must(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	r := mvm(t, timeout, "", args...)
	if r.code != 0 {
		t.Fatalf("mvmctl %v failed:\n%s", args, r)
	}
	return r
}

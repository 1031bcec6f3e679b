package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSDK builds a program in a module of its own that imports pkg/mvm (as
// an embedding user's would, through a replace of this checkout) and runs
// it: it boots a VM, execs with streams, statuses and a signal, copies both
// ways, forwards a port, stops and removes the VM, all through the SDK.
func TestSDK(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "sdkuser", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module example.com/sdkuser\n\ngo 1.26\n\nrequire github.com/mvm-dev/mvm v0.0.0\n\nreplace github.com/mvm-dev/mvm => " + repo + "\n"
	for name, b := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": src} {
		if err := os.WriteFile(filepath.Join(mod, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := filepath.Join(mod, "sdkuser")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = mod
	// -mod=mod lets go fill in the indirect requirements from mvm's own
	// go.mod, as `go get` would for a user; GOWORK=off keeps any workspace
	// of the checkout out of it.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a module importing pkg/mvm: %v\n%s", err, out)
	}

	// Its own state (a List of its VMs must see only its own), the shared
	// image cache.
	state := t.TempDir()
	env := []string{"SDK_BIN=" + filepath.Dir(mvmctl), "MVM_STATE_DIR=" + state}
	run := exec.CommandContext(ctx, bin)
	run.Env = append(append([]string(nil), baseEnv...), env...)
	out, err := run.CombinedOutput()
	t.Logf("sdkuser:\n%s", out)
	if err != nil {
		t.Fatalf("sdkuser: %v", err)
	}
	if !strings.Contains(string(out), "sdk: all checks passed") {
		t.Fatal("sdkuser did not finish its checks")
	}
}

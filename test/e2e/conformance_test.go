package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// backends lists the backends the conformance suite runs against:
// MVM_E2E_BACKENDS (comma-separated) or every backend this build knows.
// A backend whose host requirements are missing fails unless it is listed
// in MVM_E2E_SKIP, so CI cannot pass by silently testing less.
func backends() []string {
	if v := os.Getenv("MVM_E2E_BACKENDS"); v != "" {
		return strings.Split(v, ",")
	}
	return knownBackends
}

// knownBackends are the backends with a conformance obligation.
// firecracker runs against the stand-in VMM here (main_test.go).
var knownBackends = []string{"qemu", "docker", "firecracker"}

func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	skip := map[string]bool{}
	for _, b := range strings.Split(os.Getenv("MVM_E2E_SKIP"), ",") {
		skip[b] = true
	}
	for _, be := range backends() {
		t.Run(be, func(t *testing.T) {
			if skip[be] {
				t.Skipf("backend %s listed in MVM_E2E_SKIP", be)
			}
			if be == "docker" {
				if err := exec.Command("docker", "info").Run(); err != nil {
					t.Fatalf("backend docker: daemon not reachable (%v); start Docker or set MVM_E2E_SKIP=docker", err)
				}
			}
			f(t, be)
		})
	}
}

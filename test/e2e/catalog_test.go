package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCatalogImages boots catalog images and uses what each is for. The
// Debian ones (python, postgres) bootstrap from the host's apt mirror on a
// cold cache (~1 min each); MVM_E2E_CACHE keeps them between runs.
func TestCatalogImages(t *testing.T) {
	cases := []struct {
		image, memory string
		check         func(t *testing.T, vm string)
	}{
		{"http", "256M", func(t *testing.T, vm string) {
			// busybox httpd is started by the agent as an image service; the
			// VM is only ready once its health check passed.
			r := must(t, time.Minute, "exec", vm, "--", "wget", "-qO-", "http://127.0.0.1/")
			if !strings.Contains(r.stdout, "It works") {
				t.Fatalf("GET / = %q", r.stdout)
			}
		}},
		{"python", "256M", func(t *testing.T, vm string) {
			r := must(t, time.Minute, "exec", vm, "--", "python3", "-c", "print(6*7)")
			if strings.TrimSpace(r.stdout) != "42" {
				t.Fatalf("python3 printed %q", r.stdout)
			}
		}},
		{"postgres", "256M", func(t *testing.T, vm string) {
			// The server runs as a service; the health check (pg_isready)
			// gates readiness, so it accepts connections by now.
			r := must(t, time.Minute, "exec", "-u", "postgres", vm, "--",
				"psql", "-h", "/tmp", "-tA", "-c", "select 1")
			if strings.TrimSpace(r.stdout) != "1" {
				t.Fatalf("psql printed %q", r.stdout)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.image, func(t *testing.T) {
			vm := "cat-" + c.image
			start := time.Now()
			must(t, bootTimeout, "up", "--name", vm, "--image", c.image, "--memory", c.memory)
			t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", vm) })
			t.Logf("up --image %s: %v (includes the build on a cold cache)", c.image, time.Since(start).Round(100*time.Millisecond))
			c.check(t, vm)
		})
	}
}

package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/paths"
)

func TestToolCheck(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	c := toolCheck("definitely-not-installed", "testing", "apt-get install x", Fail, "it matters")
	if c.Status != Fail || c.Fix != "apt-get install x" || !strings.Contains(c.Detail, "it matters") {
		t.Fatalf("%+v", c)
	}
	c = toolCheck("definitely-not-installed", "testing", "fix", Warn, "")
	if c.Status != Warn {
		t.Fatalf("%+v", c)
	}
}

func TestAgentCheck(t *testing.T) {
	c := agentCheck(func() (string, error) { return "", errors.New("not built") })
	if c.Status != Fail || c.Fix != "make build" {
		t.Fatalf("%+v", c)
	}
	c = agentCheck(func() (string, error) { return "/x/mvm-agent", nil })
	if c.Status != OK || !strings.Contains(c.Detail, "/x/mvm-agent") {
		t.Fatalf("%+v", c)
	}
}

func TestDiskCheckWalksUpToExistingDir(t *testing.T) {
	dir := t.TempDir()
	c := diskCheck(dir+"/not/yet/created", "cache")
	if c.Status == "" || !strings.Contains(c.Detail, "GiB free") {
		t.Fatalf("%+v", c)
	}
}

// Run never fails; every check has a name, a status and a detail, and a
// failed check carries a fix.
func TestRunReportsEveryCheck(t *testing.T) {
	r := Run(context.Background(), Options{Dirs: paths.Dirs{Cache: t.TempDir(), State: t.TempDir()}})
	if len(r.Checks) < 8 {
		t.Fatalf("only %d checks", len(r.Checks))
	}
	failed := false
	for _, c := range r.Checks {
		if c.Name == "" || c.Status == "" || c.Detail == "" {
			t.Errorf("incomplete check %+v", c)
		}
		if c.Status == Fail {
			failed = true
			if c.Fix == "" {
				t.Errorf("failed check without a fix: %+v", c)
			}
		}
	}
	if r.OK == failed {
		t.Fatalf("OK=%v but a check failed=%v", r.OK, failed)
	}
}

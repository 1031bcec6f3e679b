package reaper

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func startSh(t *testing.T, r *Reaper, script string) *Process {
	t.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	p, err := r.Start("/bin/sh", []string{"sh", "-c", script}, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatalf("start %q: %v", script, err)
	}
	return p
}

func waitFor(t *testing.T, p *Process) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait pid %d: %v", p.Pid, err)
	}
	return ws.ExitStatus()
}

// One test function: a Reaper is process-wide (wait4(-1)), so subtests share it
// and must not run in parallel with other reapers.
func TestReaper(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	r, err := Default()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("exit codes", func(t *testing.T) {
		for _, code := range []int{0, 1, 3, 255} {
			if got := waitFor(t, startSh(t, r, fmt.Sprintf("exit %d", code))); got != code {
				t.Errorf("exit %d: got %d", code, got)
			}
		}
	})

	t.Run("many concurrent short children", func(t *testing.T) {
		// Children that exit immediately race the registration; every status
		// must still reach its own waiter.
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := waitFor(t, startSh(t, r, fmt.Sprintf("exit %d", i))); got != i {
					t.Errorf("child %d: got status %d", i, got)
				}
			}()
		}
		wg.Wait()
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		before := r.Orphans()
		// The background sleep outlives its parent and is re-parented to us
		// (child subreaper); the loop must reap it even though nobody waits.
		if got := waitFor(t, startSh(t, r, "sleep 0.1 & exit 0")); got != 0 {
			t.Fatalf("parent exit %d", got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for r.Orphans() == before {
			if time.Now().After(deadline) {
				t.Fatal("orphan was not reaped within 5s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("exec failure", func(t *testing.T) {
		if _, err := r.Start("/nonexistent/binary", []string{"x"}, &os.ProcAttr{}); err == nil {
			t.Fatal("start of missing binary succeeded")
		}
	})
}

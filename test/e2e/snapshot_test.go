package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSnapshotRestoreClones: a snapshot restores twice under new names;
// both clones answer exec with their own hostname and disk, and the
// snapshot cannot be removed while they exist.
func TestSnapshotRestoreClones(t *testing.T) {
	const src, snap = "e2e-snapsrc", "e2e-snap"
	cold := time.Now()
	must(t, bootTimeout, "up", "--name", src, "--memory", "128M")
	must(t, time.Minute, "exec", src, "--", "true")
	coldDur := time.Since(cold)
	t.Cleanup(func() {
		mvm(t, time.Minute, "", "rm", "-f", src, "e2e-clone-1", "e2e-clone-2")
		mvm(t, time.Minute, "", "snapshot", "rm", "-f", snap)
	})
	must(t, time.Minute, "exec", src, "--", "sh", "-c", "echo from-source > /root/mark && sync")
	must(t, 2*time.Minute, "snapshot", "create", src, snap)

	var snaps []struct {
		Name     string `json:"name"`
		Source   string `json:"source"`
		Complete bool   `json:"complete"`
	}
	r := must(t, time.Minute, "snapshot", "ls", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps) != 1 || snaps[0].Name != snap || snaps[0].Source != src || !snaps[0].Complete {
		t.Fatalf("snapshot ls: %v %s", err, r)
	}
	// The source keeps running after the snapshot.
	must(t, time.Minute, "exec", src, "--", "true")

	var restoreDur time.Duration
	for _, clone := range []string{"e2e-clone-1", "e2e-clone-2"} {
		began := time.Now()
		must(t, 2*time.Minute, "up", "--from-snapshot", snap, "--name", clone)
		out := must(t, time.Minute, "exec", clone, "--", "hostname")
		restoreDur = time.Since(began)
		if got := strings.TrimSpace(out.stdout); got != clone {
			t.Fatalf("clone %s has hostname %q", clone, got)
		}
		if out := must(t, time.Minute, "exec", clone, "--", "cat", "/root/mark"); strings.TrimSpace(out.stdout) != "from-source" {
			t.Fatalf("clone %s lost the source's disk: %q", clone, out.stdout)
		}
		must(t, time.Minute, "exec", clone, "--", "sh", "-c", "echo "+clone+" > /root/own && sync")
	}
	// Clones do not share a writable disk.
	if r := mvm(t, time.Minute, "", "exec", "e2e-clone-1", "--", "cat", "/root/own"); strings.TrimSpace(r.stdout) != "e2e-clone-1" {
		t.Fatalf("clone-1 sees %q", r.stdout)
	}
	// Clocks are current, not the snapshot's.
	out := must(t, time.Minute, "exec", "e2e-clone-2", "--", "date", "+%s")
	secs, err := strconv.ParseInt(strings.TrimSpace(out.stdout), 10, 64)
	if err != nil || abs(time.Now().Unix()-secs) > 5 {
		t.Fatalf("clone clock %q vs host %d", out.stdout, time.Now().Unix())
	}
	t.Logf("cold up-to-exec %.2fs, restore-to-exec %.2fs (%.2fx)", coldDur.Seconds(), restoreDur.Seconds(), restoreDur.Seconds()/coldDur.Seconds())

	if r := mvm(t, time.Minute, "", "snapshot", "rm", snap); r.code == 0 || !strings.Contains(r.stderr, "e2e-clone-1") {
		t.Fatalf("snapshot rm with clones: %s", r)
	}
	must(t, time.Minute, "rm", "-f", "e2e-clone-1", "e2e-clone-2")
	must(t, time.Minute, "snapshot", "rm", snap)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUpPhases(t *testing.T) {
	out := strings.Join([]string{
		`{"type":"progress","stage":"backend","elapsed_s":0.001}`,
		`{"type":"progress","stage":"image","elapsed_s":0.005}`,
		`{"type":"progress","stage":"boot","elapsed_s":0.25}`,
		`{"type":"progress","stage":"agent","elapsed_s":0.5}`,
		`{"type":"progress","stage":"agent","elapsed_s":1.5}`,
		`{"type":"progress","stage":"ready","elapsed_s":4.5}`,
		`{`, `  "type": "result"`, `}`,
	}, "\n")
	ph, err := upPhases(out, 4700*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{
		bootPhases[0].name:                  250 * time.Millisecond,
		bootPhases[1].name:                  250 * time.Millisecond,
		bootPhases[2].name:                  4 * time.Second,
		"mvmctl process: start-up and exit": 200 * time.Millisecond,
	}
	for n, d := range want {
		if got := ph[n]; (got - d).Abs() > time.Millisecond {
			t.Errorf("%s: %v, want %v", n, got, d)
		}
	}
	if _, err := upPhases(`{"type":"progress","stage":"boot","elapsed_s":1}`, time.Second); err == nil {
		t.Error("a run without agent and ready events gave phases")
	}
	m := medianPhases([]map[string]time.Duration{ph, ph, {bootPhases[0].name: time.Second}})
	if len(m) != 4 || m[0].P50 != Seconds(250*time.Millisecond) {
		t.Errorf("medians %+v", m)
	}
}

func TestSupervisorPSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("needs Linux /proc/PID/smaps_rollup")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pids.json"), []byte(fmt.Sprintf(`{"supervisor":{"pid":%d,"start":1}}`, os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := supervisorPSS(dir)
	if err != nil || n <= 0 {
		t.Fatalf("PSS of this test as a supervisor: %d, %v", n, err)
	}
	if _, err := supervisorPSS(t.TempDir()); err == nil {
		t.Fatal("no pids.json gave a figure")
	}
}

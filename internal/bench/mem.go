package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/supervisor"
)

// SupervisorTarget is the most memory mvm's own processes may take per VM.
const SupervisorTarget = 10 << 20

// supervisorPSS is the proportional set size (shared pages split among
// their users, so the binary mapped by both counts once) of VM dir's
// supervisor and its VMM guard: what one more VM costs beyond the VMM.
func supervisorPSS(vmDir string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(vmDir, "pids.json"))
	if err != nil {
		return 0, err
	}
	var p supervisor.Pids
	if err := json.Unmarshal(b, &p); err != nil {
		return 0, fmt.Errorf("pids.json: %w", err)
	}
	if p.Supervisor.Pid <= 0 {
		return 0, fmt.Errorf("pids.json names no supervisor")
	}
	sup := p.Supervisor.Pid
	total, err := pss(sup)
	if err != nil {
		return 0, err
	}
	// The guard is the supervisor's child with --vmm-guard in its argv.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == sup {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte("--vmm-guard\x00"+strconv.Itoa(sup))) {
			continue
		}
		if n, err := pss(pid); err == nil {
			total += n
		}
	}
	return total, nil
}

// pss reads Pss from /proc/PID/smaps_rollup, in bytes.
func pss(pid int) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("smaps_rollup of %d: %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("smaps_rollup of %d has no Pss", pid)
}

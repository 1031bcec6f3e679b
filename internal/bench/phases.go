package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Phase is one part of a cold up→exec, its median over the runs.
type Phase struct {
	Name string  `json:"name"`
	P50  Seconds `json:"p50_s"`
}

// Phases of a cold up→exec, from `up --json`'s progress events: each
// phase runs from the event that starts it to the one that starts the
// next.
var bootPhases = []struct{ name, until string }{
	{"prepare: backend choice, image cache, VM record", "boot"},
	{"start: config drive, disk overlay, supervisor, QEMU", "agent"},
	{"guest: kernel, init, agent ready, stages", "ready"},
}

// upPhases reads up's --json output and returns the time of each boot
// phase, plus the process's own start-up and exit (wall less the last
// event) as "mvmctl process".
func upPhases(out string, wall time.Duration) (map[string]time.Duration, error) {
	at := map[string]float64{} // stage → elapsed_s of its first event
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ev struct {
			Type    string  `json:"type"`
			Stage   string  `json:"stage"`
			Elapsed float64 `json:"elapsed_s"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.Type != "progress" {
			continue
		}
		if _, ok := at[ev.Stage]; !ok {
			at[ev.Stage] = ev.Elapsed
		}
	}
	out2 := map[string]time.Duration{}
	prev := 0.0
	for _, p := range bootPhases {
		t, ok := at[p.until]
		if !ok {
			return nil, fmt.Errorf("up --json printed no %q event", p.until)
		}
		out2[p.name] = time.Duration((t - prev) * float64(time.Second))
		prev = t
	}
	out2["mvmctl process: start-up and exit"] = wall - time.Duration(prev*float64(time.Second))
	return out2, nil
}

// medianPhases turns per-run phase times into medians, in boot order.
func medianPhases(runs []map[string]time.Duration) []Phase {
	names := []string{}
	for _, p := range bootPhases {
		names = append(names, p.name)
	}
	names = append(names, "mvmctl process: start-up and exit", "first exec")
	var out []Phase
	for _, n := range names {
		var ds []time.Duration
		for _, r := range runs {
			if d, ok := r[n]; ok {
				ds = append(ds, d)
			}
		}
		if len(ds) > 0 {
			out = append(out, Phase{Name: n, P50: NewSeries(n, ds).P50})
		}
	}
	return out
}

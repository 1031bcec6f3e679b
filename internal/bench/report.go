package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is one run of the bench: every figure asked for, in order.
type Report struct {
	Mvmctl         string   `json:"mvmctl"` // the binary measured
	Iterations     int      `json:"iterations"`
	ExecIterations int      `json:"exec_iterations,omitempty"` // when exec ran
	Accel          string   `json:"accel,omitempty"`           // QEMU's: kvm or tcg
	Figures        []Figure `json:"figures"`
}

// WriteText prints r as a table: each figure's measurement, its baseline
// under it, then the ratio against the target. Columns are laid out by hand:
// tabwriter ends a column at every line that lacks the cell, and the ratio
// lines do.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mvmctl bench: -n %d", r.Iterations)
	if r.ExecIterations > 0 {
		fmt.Fprintf(&b, ", %d exec round trips", r.ExecIterations)
	}
	if r.Accel != "" {
		fmt.Fprintf(&b, ", QEMU accelerator %s", r.Accel)
	}
	b.WriteString("\n\n")
	// Each line is table cells, or a name and free text (len 2).
	lines := [][]string{{"FIGURE", "MEASUREMENT", "N", "P50", "P95", "P99"}}
	row := func(name, what string, s *Series) []string {
		return []string{name, what, fmt.Sprint(s.N), fmtDur(s.P50), fmtDur(s.P95), fmtDur(s.P99)}
	}
	for _, f := range r.Figures {
		if f.Skipped != "" {
			lines = append(lines, []string{f.Name, "skipped: " + f.Skipped})
			continue
		}
		lines = append(lines, row(f.Name, f.Measure.What, f.Measure),
			row("", "baseline: "+f.Baseline.What, f.Baseline), []string{"", verdict(f)})
		for _, p := range f.Phases {
			lines = append(lines, []string{"", fmt.Sprintf("  %-54s p50 %s", p.Name, fmtDur(p.P50))})
		}
		if f.SupervisorPSS != nil {
			v := "met"
			if *f.SupervisorPSS > SupervisorTarget {
				v = "NOT met"
			}
			lines = append(lines, []string{"", fmt.Sprintf("supervisor + VMM guard memory (PSS) per VM: %.1f MiB; target ≤ %d MiB: %s",
				float64(*f.SupervisorPSS)/(1<<20), SupervisorTarget>>20, v)})
		}
	}
	width := make([]int, 6)
	for _, l := range lines {
		for i, c := range l {
			if len(l) > 2 || i == 0 {
				width[i] = max(width[i], utf8.RuneCountInString(c))
			}
		}
	}
	for _, l := range lines {
		for i, c := range l {
			b.WriteString(c)
			if i < len(l)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is the ratio line of f: the ratio, the target and whether it was
// met, and the note.
func verdict(f Figure) string {
	var parts []string
	if f.Ratio != nil {
		parts = append(parts, fmt.Sprintf("ratio %.2f× (p50)", *f.Ratio))
	} else {
		parts = append(parts, "ratio n/a (zero baseline)")
	}
	if f.Target != nil {
		met := "NOT met"
		if f.Met != nil && *f.Met {
			met = "met"
		}
		parts = append(parts, fmt.Sprintf("target ≤ %.2f×: %s", *f.Target, met))
	}
	if f.Note != "" {
		parts = append(parts, f.Note)
	}
	return strings.Join(parts, "; ")
}

// fmtDur prints seconds for boots and milliseconds for round trips.
func fmtDur(s Seconds) string {
	d := time.Duration(s)
	if d >= time.Second {
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

package bench

import (
	"encoding/json"
	"slices"
	"time"
)

// Seconds is a duration that JSON-encodes as seconds (a float), like every
// other *_s field mvmctl prints.
type Seconds time.Duration

// MarshalJSON implements json.Marshaler.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// Percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of samples
// sorted ascending: the smallest sample with at least p% of all samples at
// or below it. It is always one of the samples, never an interpolation, so
// p99 of 5 runs is honestly the slowest. Integer arithmetic: 0.95*20 in
// floating point is not 19.
func Percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100 // ceil(p/100 · n)
	rank = max(1, min(n, rank))
	return sorted[rank-1]
}

// Series is one measured quantity: what was timed, every sample in the
// order taken, and its nearest-rank percentiles.
type Series struct {
	What    string    `json:"what"`
	N       int       `json:"n"`
	P50     Seconds   `json:"p50_s"`
	P95     Seconds   `json:"p95_s"`
	P99     Seconds   `json:"p99_s"`
	Samples []Seconds `json:"samples_s"`
}

// NewSeries summarizes samples; it does not reorder the caller's slice.
func NewSeries(what string, samples []time.Duration) *Series {
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	s := &Series{What: what, N: len(samples),
		P50: Seconds(Percentile(sorted, 50)), P95: Seconds(Percentile(sorted, 95)), P99: Seconds(Percentile(sorted, 99))}
	for _, d := range samples {
		s.Samples = append(s.Samples, Seconds(d))
	}
	return s
}

// Figure is one headline number: a measurement next to its raw baseline
// taken in the same run, their ratio (p50 over p50) and the target ratio.
type Figure struct {
	Name     string  `json:"name"`
	Measure  *Series `json:"measure"`
	Baseline *Series `json:"baseline"`
	// Ratio is nil when there is nothing to divide by (skipped, or a zero
	// baseline), which JSON cannot carry as NaN.
	Ratio *float64 `json:"ratio"`
	// Target is the ratio Measure/Baseline must not exceed; nil when the
	// figure has no numeric target yet (Note says what would answer it).
	Target *float64 `json:"target"`
	Met    *bool    `json:"met"`
	Note   string   `json:"note,omitempty"`
	// Skipped is why the figure was not measured; nothing else is set.
	Skipped string `json:"skipped,omitempty"`
	// Phases break Measure down (medians), where the figure can tell.
	Phases []Phase `json:"phases,omitempty"`
	// SupervisorPSS is the memory of one VM's supervisor and VMM guard
	// (boot only), against SupervisorTarget.
	SupervisorPSS *int64 `json:"supervisor_pss_bytes,omitempty"`
}

// NewFigure computes the ratio and whether the target was met. target ≤ 0
// means the figure has none.
func NewFigure(name string, measure, baseline *Series, target float64, note string) Figure {
	f := Figure{Name: name, Measure: measure, Baseline: baseline, Note: note}
	if baseline != nil && measure != nil && baseline.P50 > 0 {
		r := float64(measure.P50) / float64(baseline.P50)
		f.Ratio = &r
	}
	if target > 0 {
		f.Target = &target
		if f.Ratio != nil {
			met := *f.Ratio <= target
			f.Met = &met
		}
	}
	return f
}

// Skipped is a figure that could not be measured on this host, and why.
func Skipped(name, reason string) Figure {
	return Figure{Name: name, Skipped: reason}
}

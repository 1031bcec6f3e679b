package bench

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	var out []time.Duration
	for _, x := range v {
		out = append(out, time.Duration(x)*time.Millisecond)
	}
	return out
}

// seq is 1..n milliseconds.
func seq(n int) []time.Duration {
	var v []int
	for i := 1; i <= n; i++ {
		v = append(v, i)
	}
	return ms(v...)
}

func TestPercentileNearestRank(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"p50 of two is the lower", ms(1, 2), 50, time.Millisecond},
		{"p95 of two is the higher", ms(1, 2), 95, 2 * time.Millisecond},
		{"p50 of five is the middle", seq(5), 50, 3 * time.Millisecond},
		{"p99 of five is the slowest", seq(5), 99, 5 * time.Millisecond},
		{"p95 of 20 is the 19th, not the 20th", seq(20), 95, 19 * time.Millisecond},
		{"p99 of 20 is the 20th", seq(20), 99, 20 * time.Millisecond},
		{"p50 of 100 is the 50th", seq(100), 50, 50 * time.Millisecond},
		{"p99 of 100 is the 99th", seq(100), 99, 99 * time.Millisecond},
		{"p100 is the max", seq(10), 100, 10 * time.Millisecond},
		{"p1 of 100 is the min", seq(100), 1, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(n=%d, p%d) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestNewSeriesKeepsOrderAndSummarizes(t *testing.T) {
	in := ms(30, 10, 20)
	s := NewSeries("x", in)
	if !slices.Equal(in, ms(30, 10, 20)) {
		t.Errorf("caller's samples reordered: %v", in)
	}
	if s.N != 3 || s.P50 != Seconds(20*time.Millisecond) || s.P95 != Seconds(30*time.Millisecond) || s.P99 != Seconds(30*time.Millisecond) {
		t.Errorf("series %+v", s)
	}
	if len(s.Samples) != 3 || s.Samples[0] != Seconds(30*time.Millisecond) {
		t.Errorf("samples %v, want in the order taken", s.Samples)
	}
}

func TestNewFigureRatioAndTarget(t *testing.T) {
	tests := []struct {
		name      string
		measure   []time.Duration
		baseline  []time.Duration
		target    float64
		wantRatio float64 // -1: nil
		wantMet   int     // -1: nil, 0: false, 1: true
	}{
		{"under target", ms(105), ms(100), 1.10, 1.05, 1},
		{"on target is met", ms(110), ms(100), 1.10, 1.10, 1},
		{"over target", ms(120), ms(100), 1.10, 1.20, 0},
		{"faster than baseline", ms(20), ms(100), 0.3, 0.2, 1},
		{"no target", ms(50), ms(100), 0, 0.5, -1},
		{"zero baseline has no ratio", ms(50), ms(0), 1.1, -1, -1},
		{"ratio is of the p50s", ms(100, 100, 900), ms(50, 50, 50), 0, 2, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFigure("f", NewSeries("m", tt.measure), NewSeries("b", tt.baseline), tt.target, "")
			switch {
			case tt.wantRatio < 0 && f.Ratio != nil:
				t.Errorf("ratio %v, want none", *f.Ratio)
			case tt.wantRatio >= 0 && (f.Ratio == nil || abs(*f.Ratio-tt.wantRatio) > 1e-9):
				t.Errorf("ratio %v, want %v", f.Ratio, tt.wantRatio)
			}
			switch {
			case tt.wantMet < 0 && f.Met != nil:
				t.Errorf("met %v, want none", *f.Met)
			case tt.wantMet >= 0 && (f.Met == nil || *f.Met != (tt.wantMet == 1)):
				t.Errorf("met %v, want %v", f.Met, tt.wantMet == 1)
			}
			if (tt.target > 0) != (f.Target != nil) {
				t.Errorf("target %v for %v", f.Target, tt.target)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func sampleReport() *Report {
	return &Report{Mvmctl: "/bin/mvmctl", Iterations: 2, ExecIterations: 40, Accel: "tcg", Figures: []Figure{
		NewFigure("boot", NewSeries("mvmctl up → first exec OK", ms(1500, 1600)), NewSeries("raw QEMU → agent ready", ms(1400, 1450)), BootTarget, ""),
		NewFigure("restore", NewSeries("up --from-snapshot → first exec OK", ms(800, 900)), NewSeries("cold up → first exec OK", ms(1500, 1600)), 0, RestoreNote),
		NewFigure("exec-docker", NewSeries("mvmctl exec", ms(40, 50)), NewSeries("docker exec C true", ms(100, 110)), DockerTarget, ""),
		Skipped("exec-other", "docker daemon not running"),
	}}
}

func TestWriteText(t *testing.T) {
	var b strings.Builder
	if err := WriteText(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"-n 2, 40 exec round trips, QEMU accelerator tcg",
		"FIGURE", "P99",
		"mvmctl up → first exec OK", "1.500s", "1.600s",
		"baseline: raw QEMU → agent ready", "1.400s",
		"ratio 1.07× (p50); target ≤ 1.10×: met",
		"ratio 0.53× (p50); " + RestoreNote,
		"40.0ms", "ratio 0.40× (p50); target ≤ 0.30×: NOT met",
		"exec-other   skipped: docker daemon not running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	// The baseline row lines up under its measurement's columns.
	lines := strings.Split(out, "\n")
	var m, base string
	for i, l := range lines {
		if strings.HasPrefix(l, "boot ") {
			m, base = l, lines[i+1]
		}
	}
	if strings.Index(m, "1.500s") != strings.Index(base, "1.400s") {
		t.Errorf("columns misaligned:\n%s\n%s", m, base)
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Iterations int `json:"iterations"`
		Figures    []struct {
			Name     string          `json:"name"`
			Measure  *map[string]any `json:"measure"`
			Baseline *struct {
				P50     float64   `json:"p50_s"`
				P95     float64   `json:"p95_s"`
				P99     float64   `json:"p99_s"`
				Samples []float64 `json:"samples_s"`
			} `json:"baseline"`
			Ratio   *float64 `json:"ratio"`
			Target  *float64 `json:"target"`
			Met     *bool    `json:"met"`
			Skipped string   `json:"skipped"`
		} `json:"figures"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Iterations != 2 || len(got.Figures) != 4 {
		t.Fatalf("%s", b)
	}
	boot := got.Figures[0]
	if boot.Baseline == nil || boot.Baseline.P50 != 1.4 || boot.Baseline.P99 != 1.45 || len(boot.Baseline.Samples) != 2 {
		t.Errorf("boot baseline %+v", boot.Baseline)
	}
	if boot.Target == nil || *boot.Target != 1.10 || boot.Met == nil || !*boot.Met || boot.Ratio == nil {
		t.Errorf("boot %s", b)
	}
	if r := got.Figures[1]; r.Target != nil || r.Met != nil || r.Ratio == nil {
		t.Errorf("restore: want a ratio, no target: %s", b)
	}
	if s := got.Figures[3]; s.Skipped == "" || s.Measure != nil || s.Ratio != nil {
		t.Errorf("skipped figure carries numbers: %s", b)
	}
	for _, key := range []string{`"target":null`, `"met":null`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("no %s: a figure without a target says so", key)
		}
	}
}

func TestParseKinds(t *testing.T) {
	tests := []struct {
		arg  string
		want []Kind
		err  bool
	}{
		{"", []Kind{Boot, Restore, Exec, Pool, Ls}, false},
		{"all", []Kind{Boot, Restore, Exec, Pool, Ls}, false},
		{"pool", []Kind{Pool}, false},
		{"ls", []Kind{Ls}, false},
		{"boot", []Kind{Boot}, false},
		{"restore", []Kind{Restore}, false},
		{"exec", []Kind{Exec}, false},
		{"Boot", nil, true},
		{"docker", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseKinds(tt.arg)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("ParseKinds(%q) = %v, %v", tt.arg, got, err)
		}
	}
}

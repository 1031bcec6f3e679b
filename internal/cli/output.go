package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mvm-dev/mvm/internal/vm"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
}

// progressPrinter renders vm.Events: JSON lines with --json, one status line
// rewritten in place on a TTY (erased when done), nothing otherwise.
type progressPrinter struct {
	mu     sync.Mutex
	w      io.Writer
	json   bool
	tty    bool
	width  int
	closed bool
}

func (p *progressPrinter) event(e vm.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	switch {
	case p.json:
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			vm.Event
		}{"progress", e})
		fmt.Fprintf(p.w, "%s\n", b)
	case p.tty:
		line := fmt.Sprintf("[%5.1fs] %s", e.Elapsed, e.Message)
		if len(line) > 100 {
			line = line[:100]
		}
		pad := ""
		if n := p.width - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.width = len(line)
	}
}

// newProgress returns the printer for g's output mode: JSON lines on stdout
// with --json, a status line on a terminal stderr, silence otherwise.
func newProgress(g *globals) *progressPrinter {
	pp := &progressPrinter{w: g.stderr, json: g.json, tty: isTTY(g.stderr)}
	if g.json {
		pp.w = g.stdout
	}
	return pp
}

// done erases the status line.
func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && !p.json && p.width > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.width))
	}
	p.closed = true
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// Package guestinit is what mvm-agent does before and around serving: the
// PID 1 duties in the initramfs (modules, find and switch to the root disk)
// and in the root filesystem (mounts, config drive, hostname, clock,
// loopback, transport, reaping, power-off), plus the plain service mode.
package guestinit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Console writes kmsg-like progress lines ("mvm-agent: ...") to /dev/console,
// which the host captures as the VM's serial log.
type Console struct {
	mu sync.Mutex
	w  io.Writer
}

// OpenConsole opens /dev/console, falling back to stderr (before /dev is
// mounted, or outside a VM).
func OpenConsole() *Console {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		return &Console{w: f}
	}
	return &Console{w: os.Stderr}
}

// Reopen switches to /dev/console once it exists (after mounting /dev).
func (c *Console) Reopen() {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = f
}

// NewConsole writes to w (tests, service mode).
func NewConsole(w io.Writer) *Console { return &Console{w: w} }

// Printf writes one line.
func (c *Console) Printf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "mvm-agent: %s\n", msg)
}

// Logger returns a slog.Logger whose records go to the console as lines.
func (c *Console) Logger(level slog.Level) *slog.Logger {
	return slog.New(&consoleHandler{c: c, level: level})
}

type consoleHandler struct {
	c     *Console
	level slog.Level
	attrs []slog.Attr
}

func (h *consoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *consoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String() + " ")
	}
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.c.Printf("%s", b.String())
	return nil
}

func (h *consoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &consoleHandler{c: h.c, level: h.level, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *consoleHandler) WithGroup(string) slog.Handler { return h }

package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func TestRotatorLimitAndOneGeneration(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int64
		cur    string
		old    string
	}{
		{"under the limit", []string{"a\n", "b\n"}, 10, "a\nb\n", ""},
		{"cut at the last newline that fits", []string{"aaa\nbbb\n", "c\ndd\n"}, 10, "dd\n", "aaa\nbbb\nc\n"},
		{"big first write cut at a newline", []string{"aaaa\nbbbb\ncc\n"}, 10, "cc\n", "aaaa\nbbbb\n"},
		{"no newline fits: rotate first", []string{"aaaaaaaa", "bbbbbb"}, 10, "bbbbbb", "aaaaaaaa"},
		{"one generation kept", []string{"1111\n", "2222\n", "3333\n", "4444\n", "5555\n"}, 10, "5555\n", "3333\n4444\n"},
		{"run longer than a file", []string{strings.Repeat("x", 25)}, 10, "xxxxx", "xxxxxxxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "serial.log")
			r, err := OpenRotator(path, tt.max, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("write %q: %d, %v", w, n, err)
				}
			}
			r.Close()
			if got := readFile(t, path); got != tt.cur {
				t.Errorf("current = %q, want %q", got, tt.cur)
			}
			if got := readFile(t, OldPath(path)); got != tt.old {
				t.Errorf("old = %q, want %q", got, tt.old)
			}
			if _, err := os.Stat(OldPath(path) + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("temporary file left: %v", err)
			}
		})
	}
}

func TestRotatorFreshStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("previous boot\n"), 0o600)
	r, err := OpenRotator(path, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	r.Write([]byte("this boot\n"))
	r.Close()
	if cur, old := readFile(t, path), readFile(t, OldPath(path)); cur != "this boot\n" || old != "previous boot\n" {
		t.Fatalf("current %q, old %q", cur, old)
	}
	// Without fresh it appends, and counts what is there towards the limit.
	r, _ = OpenRotator(path, 15, false)
	r.Write([]byte("more\n"))
	r.Write([]byte("x\n"))
	r.Close()
	if cur, old := readFile(t, path), readFile(t, OldPath(path)); cur != "x\n" || old != "this boot\nmore\n" {
		t.Fatalf("current %q, old %q", cur, old)
	}
}

// TestRotatorConcurrent writes whole lines from several goroutines: every
// line survives intact in one of the two files and neither passes the limit.
func TestRotatorConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	const max = 64 << 10
	r, err := OpenRotator(path, max, true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				r.Write(fmt.Appendf(nil, "g%d line %04d %s\n", g, i, strings.Repeat("z", 40)))
			}
		}()
	}
	wg.Wait()
	r.Close()
	for _, p := range []string{path, OldPath(path)} {
		b := readFile(t, p)
		if len(b) > max {
			t.Fatalf("%s has %d bytes, limit %d", p, len(b), max)
		}
		for _, l := range strings.Split(strings.TrimSuffix(b, "\n"), "\n") {
			if len(l) != len("g0 line 0000 ")+40 {
				t.Fatalf("%s: torn line %q", p, l)
			}
		}
	}
}

// slowWriter blocks every write until released, like a stuck disk.
type slowWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (s *slowWriter) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}
func (s *slowWriter) Close() error { return nil }

// TestConsoleDropsWhenWriterStalls: a log that does not take writes must
// not stop the console from being drained (the guest's UART would stall).
func TestConsoleDropsWhenWriterStalls(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out := &slowWriter{release: make(chan struct{})}
	c := &console{sock: sock, out: out, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	gone, vmmExit := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(gone, context.Background())
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Far more than the buffers hold; it must all be accepted promptly.
	total := 4 << 20
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(bytes.Repeat([]byte("y"), total)); err != nil {
		t.Fatalf("console not drained while the log is stuck: %v", err)
	}
	vmmExit() // first: the copier must not dial again after the close
	conn.Close()
	close(out.release)
	<-done
	// What was pending, plus what the socket still held when the log came
	// back, is kept; the rest was read and dropped.
	kept := int64(out.buf.Len())
	if kept+c.dropped.Load() != int64(total) || c.dropped.Load() == 0 {
		t.Fatalf("kept %d + dropped %d, sent %d", kept, c.dropped.Load(), total)
	}
}

// TestConsoleCopiesUntilEOF: output still in the socket when the VMM exits
// reaches the log.
func TestConsoleCopiesUntilEOF(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "console.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := filepath.Join(dir, "serial.log")
	r, err := OpenRotator(path, 4<<10, true)
	if err != nil {
		t.Fatal(err)
	}
	c := &console{sock: sock, out: r, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	gone, vmmExit := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(gone, context.Background())
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	// Byte by byte, as QEMU sends what the guest's UART transmits: the
	// copier must coalesce rather than run out of buffers and drop.
	for _, b := range []byte(want.String()) {
		conn.Write([]byte{b})
	}
	vmmExit() // before the data is read: it must still arrive
	conn.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("console copier did not finish")
	}
	got := readFile(t, OldPath(path)) + readFile(t, path)
	if !strings.HasSuffix(want.String(), got) || len(got) < 4<<10 {
		t.Fatalf("log holds %d bytes, not the tail of what was sent", len(got))
	}
	if c.dropped.Load() != 0 {
		t.Fatalf("dropped %d", c.dropped.Load())
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("rotator not closed: %v", err)
	}
}

package hybridvsock

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFirecracker serves the hybrid vsock handshake the way Firecracker does:
// it reads one CONNECT line; if the port has a "guest listener" it answers
// OK and then the guest's greeting in the same write (the case where a
// buffering client loses bytes); otherwise it closes the stream.
func fakeFirecracker(t *testing.T, path string, listening func(uint32) bool, greeting string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
				if err != nil {
					return
				}
				var port uint32
				if _, err := fmtSscanf(strings.TrimSpace(line), &port); err != nil || !listening(port) {
					return
				}
				c.Write([]byte("OK 1073741824\n" + greeting))
				io.Copy(c, c)
			}(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestDialKeepsBytesAfterOK(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	fakeFirecracker(t, path, func(p uint32) bool { return p == 5252 }, "hello from guest\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, 5252, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "hello from guest\n" {
		t.Fatalf("greeting %q, %v", got, err)
	}
}

func TestDialRetriesUntilSocketAndListenerExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	var up atomic.Bool // the guest's listener on port 7
	go func() {
		time.Sleep(150 * time.Millisecond) // Firecracker not started yet: ENOENT
		fakeFirecracker(t, path, func(p uint32) bool { return p == 7 && up.Load() }, "")
	}()
	// Nothing listens on the port: EOF is retried until ctx ends.
	short, scancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	_, err := Dial(short, path, 7, Options{Retry: 20 * time.Millisecond})
	scancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline error while nothing listens, got %v", err)
	}
	// The guest starts listening while we dial: the retry loop gets through.
	go func() { time.Sleep(200 * time.Millisecond); up.Store(true) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, 7, Options{Retry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestParseOK(t *testing.T) {
	tests := []struct {
		in   string
		port uint32
		ok   bool
	}{
		{"OK 1073741824", 1073741824, true},
		{"OK 0", 0, true},
		{"ok 1", 0, false},
		{"OK", 0, false},
		{"OK -1", 0, false},
		{"OK 99999999999", 0, false},
		{"NO", 0, false},
	}
	for _, tt := range tests {
		p, err := ParseOK(tt.in)
		if (err == nil) != tt.ok || p != tt.port {
			t.Errorf("ParseOK(%q) = %d, %v", tt.in, p, err)
		}
	}
}

func FuzzReply(f *testing.F) {
	f.Add([]byte("OK 1073741824\nrest"))
	f.Add([]byte("garbage without newline"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := strings.NewReader(string(b))
		line, err := readLine(r)
		if err != nil {
			return
		}
		if len(line) >= maxLine || strings.Contains(line, "\n") {
			t.Fatalf("bad line %q", line)
		}
		// Exactly the line and its newline were consumed.
		if r.Len() != len(b)-len(line)-1 {
			t.Fatalf("consumed past the line: %d left of %d", r.Len(), len(b))
		}
		_, _ = ParseOK(line)
	})
}

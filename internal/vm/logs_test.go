package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/supervisor"
)

func TestWriteLogTailAcrossRotation(t *testing.T) {
	tests := []struct {
		name     string
		old, cur *string // nil: file absent
		n        int
		want     string
	}{
		{"current has enough", ptr("o1\no2\n"), ptr("c1\nc2\nc3\n"), 2, "c2\nc3\n"},
		{"reaches into the old generation", ptr("o1\no2\no3\n"), ptr("c1\nc2\n"), 4, "o2\no3\nc1\nc2\n"},
		{"more than both hold", ptr("o1\n"), ptr("c1\n"), 10, "o1\nc1\n"},
		{"all lines", ptr("o1\no2\n"), ptr("c1\n"), 0, "o1\no2\nc1\n"},
		{"line cut by the rotation counts once", ptr("o1\no2 first half "), ptr("second half\nc1\n"), 2, "o2 first half second half\nc1\n"},
		{"current without trailing newline", ptr("o1\n"), ptr("c1\nc2"), 2, "c1\nc2"},
		{"no old generation", nil, ptr("c1\nc2\nc3\n"), 5, "c1\nc2\nc3\n"},
		{"only the old generation (mid-rotation)", ptr("o1\no2\n"), nil, 1, "o2\n"},
		{"empty current", ptr("o1\no2\n"), ptr(""), 1, "o2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "serial.log")
			if tt.old != nil {
				os.WriteFile(oldLog(path), []byte(*tt.old), 0o600)
			}
			if tt.cur != nil {
				os.WriteFile(path, []byte(*tt.cur), 0o600)
			}
			var out bytes.Buffer
			f, err := writeLogTail(path, tt.n, &out)
			if err != nil {
				t.Fatal(err)
			}
			if f != nil {
				f.Close()
			}
			if out.String() != tt.want {
				t.Fatalf("got %q, want %q", out.String(), tt.want)
			}
		})
	}
	// Mid-rotation both names are one file: it is shown once.
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("a\nb\n"), 0o600)
	os.Link(path, oldLog(path))
	var out bytes.Buffer
	f, err := writeLogTail(path, 0, &out)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out.String() != "a\nb\n" {
		t.Fatalf("hard-linked generations: got %q", out.String())
	}
	if _, err := writeLogTail(filepath.Join(t.TempDir(), "none.log"), 1, &out); !os.IsNotExist(err) {
		t.Fatalf("missing log: %v", err)
	}
}

func ptr(s string) *string { return &s }

// syncBuf is a bytes.Buffer safe to read while followLog writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowAcrossRotation follows a log the supervisor's rotator writes and
// rotates many times, and by hand truncated, and must see every line once.
func TestFollowAcrossRotation(t *testing.T) {
	old := followPoll
	followPoll = 2 * time.Millisecond
	t.Cleanup(func() { followPoll = old })

	path := filepath.Join(t.TempDir(), "serial.log")
	r, err := supervisor.OpenRotator(path, 200, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Write([]byte("before\n"))
	var out syncBuf
	f, err := writeLogTail(path, 5, &out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- followLog(ctx, path, f, &out, nil) }()

	var want strings.Builder
	want.WriteString("before\n")
	for i := range 300 {
		line := fmt.Sprintf("line %03d\n", i)
		want.WriteString(line)
		if _, err := r.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		// 200-byte files fill every ~22 lines: pause now and then so the
		// follower, like a real reader, keeps within one generation.
		if i%5 == 0 {
			time.Sleep(3 * time.Millisecond)
		}
	}
	waitOutput(t, &out, want.String())

	// Something truncates the current file in place (copytruncate):
	// following starts again at its beginning.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	fh, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	fh.WriteString("after truncate\n")
	fh.Close()
	want.WriteString("after truncate\n")
	waitOutput(t, &out, want.String())

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitOutput(t *testing.T, out *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != want {
		if time.Now().After(deadline) || !strings.HasPrefix(want, out.String()) {
			got := out.String()
			t.Fatalf("followed output diverged (%d bytes, want %d); got tail %q", len(got), len(want), got[max(0, len(got)-200):])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A guest that controls the directory a console log lives in cannot make
// logs print a host file.
func TestLogsRefuseLinkOutOfVMDir(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:secret-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755)
	// The guest replaces its console log with a link to a host file.
	if err := os.Symlink(secret, filepath.Join(run, "console.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(run, "console.log"), filepath.Join(dir, "serial.log")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := writeLogTail(filepath.Join(dir, "serial.log"), 0, &out)
	if err == nil || strings.Contains(out.String(), "secret-hash") {
		t.Fatalf("read through a guest link: %v %q", err, out.String())
	}
	// A log inside the directory, through our own link, still reads.
	os.Remove(filepath.Join(run, "console.log"))
	os.WriteFile(filepath.Join(run, "console.log"), []byte("booted\n"), 0o600)
	out.Reset()
	f, err := writeLogTail(filepath.Join(dir, "serial.log"), 0, &out)
	if err != nil || !strings.Contains(out.String(), "booted") {
		t.Fatalf("own log: %v %q", err, out.String())
	}
	if f != nil {
		f.Close()
	}
}

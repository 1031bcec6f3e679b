package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestAgent drives every agent operation of one real VM through mvmctl, on
// every backend (part of the conformance suite).
func TestAgent(t *testing.T) {
	forEachBackend(t, testAgent)
}

func testAgent(t *testing.T, be string) {
	vm := "agent-" + be
	must(t, bootTimeout, "up", "--backend", be, "--name", vm, "--memory", "256")
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", vm) })

	t.Run("50 MiB binary stdout is byte-identical", func(t *testing.T) {
		r := must(t, 5*time.Minute, "exec", vm, "--", "sh", "-c", "head -c 52428800 /dev/urandom > /tmp/big && sha256sum /tmp/big")
		want := strings.Fields(r.stdout)[0]
		r = must(t, 5*time.Minute, "exec", vm, "--", "cat", "/tmp/big")
		if len(r.stdout) != 50<<20 {
			t.Fatalf("got %d bytes", len(r.stdout))
		}
		if got := fmt.Sprintf("%x", sha256.Sum256([]byte(r.stdout))); got != want {
			t.Fatalf("sha256 %s, guest says %s", got, want)
		}
		must(t, time.Minute, "exec", vm, "--", "rm", "/tmp/big")
	})

	t.Run("stdin through cat", func(t *testing.T) {
		in := strings.Repeat("line of input\n", 5000)
		r := mvm(t, time.Minute, in, "exec", "-i", vm, "--", "cat")
		if r.code != 0 || r.stdout != in {
			t.Fatalf("got %d bytes, exit %d", len(r.stdout), r.code)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		for _, code := range []int{0, 1, 3, 255} {
			if r := mvm(t, time.Minute, "", "exec", vm, "--", "sh", "-c", fmt.Sprintf("exit %d", code)); r.code != code {
				t.Errorf("exit %d: got %d\n%s", code, r.code, r)
			}
		}
	})

	t.Run("a command that cannot start exits as the shell says", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			say  string
		}{
			{[]string{"--", "no-such-program"}, 127, "not found"},
			{[]string{"--", "/etc/passwd"}, 126, "permission denied"},
			{[]string{"-w", "/no/such/dir", "--", "true"}, 126, "working directory"},
			{[]string{"-u", "no-such-user", "--", "true"}, 126, "no-such-user"},
		} {
			args := append([]string{"exec", vm}, tc.args...)
			if r := mvm(t, time.Minute, "", args...); r.code != tc.code || !strings.Contains(r.stderr, tc.say) {
				t.Errorf("%v: exit %d, want %d saying %q\n%s", tc.args, r.code, tc.code, tc.say, r)
			}
		}
	})

	t.Run("SIGTERM reaches the guest process", func(t *testing.T) {
		cmd := exec.Command(mvmctl, "exec", vm, "--", "sh", "-c", `trap 'echo got-term; exit 42' TERM; echo started; sleep 100 & wait`)
		cmd.Env = baseEnv
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		if line, _ := br.ReadString('\n'); line != "started\n" {
			t.Fatalf("first line %q", line)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		rest, _ := io.ReadAll(br)
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 || !strings.Contains(string(rest), "got-term") {
			t.Fatalf("exit %v, output %q", err, rest)
		}
	})

	t.Run("console through a pty, second one refused", func(t *testing.T) {
		cmd := exec.Command(mvmctl, "console", vm)
		cmd.Env = append(baseEnv, "TERM=xterm")
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 100, Rows: 30})
		if err != nil {
			t.Fatal(err)
		}
		defer tty.Close()
		var out safeBuf
		copied := make(chan struct{})
		go func() { _, _ = io.Copy(&out, tty); close(copied) }()
		_, _ = io.WriteString(tty, "echo h''i\r")
		waitUntil(t, 30*time.Second, "hi from the console", func() bool { return strings.Contains(out.String(), "hi\r\n") })
		if r := mvm(t, time.Minute, "", "console", vm); r.code == 0 || !strings.Contains(r.stderr, "console busy") {
			t.Errorf("second console:\n%s", r)
		}
		// Type the next line only at a fresh prompt: busybox ash queries the
		// cursor position (ESC[6n) before each prompt and eats keystrokes
		// typed while it waits for the answer.
		waitUntil(t, 30*time.Second, "a prompt after hi", func() bool {
			o := out.String()
			i := strings.LastIndex(o, "hi\r\n")
			return i >= 0 && strings.Contains(o[i:], "# ")
		})
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(tty, "stty size; exit 3\r")
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("console exit: %v\n%q", err, out.String())
		}
		// The client has exited; its last output may still sit in the pty
		// until the reader drains it (EOF/EIO once the client side closed).
		select {
		case <-copied:
		case <-time.After(10 * time.Second):
			t.Fatal("console output never reached EOF")
		}
		if !strings.Contains(out.String(), "30 100") {
			t.Errorf("terminal size not passed on: %q", out.String())
		}
	})

	t.Run("forward serves a guest HTTP listener", func(t *testing.T) {
		must(t, time.Minute, "exec", vm, "--", "sh", "-c", "mkdir -p /tmp/w && echo forwarded-ok > /tmp/w/index.html && httpd -p 127.0.0.1:8088 -h /tmp/w")
		cmd := exec.Command(mvmctl, "forward", vm, "0:8088")
		cmd.Env = baseEnv
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Signal(syscall.SIGINT); _ = cmd.Wait() }()
		line, _ := bufio.NewReader(out).ReadString('\n')
		m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("forward printed %q", line)
		}
		client := http.Client{Timeout: 30 * time.Second}
		for i := range 3 { // several connections, each its own agent stream
			resp, err := client.Get("http://127.0.0.1:" + m[1] + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "forwarded-ok\n" {
				t.Fatalf("request %d: %s %q", i, resp.Status, body)
			}
		}
	})

	t.Run("cp round-trips a directory", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "tree")
		_ = os.MkdirAll(filepath.Join(src, "a", "b"), 0o750)
		_ = os.WriteFile(filepath.Join(src, "a", "b", "data"), bytes.Repeat([]byte("0123456789"), 100000), 0o640)
		_ = os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho run\n"), 0o755)
		_ = os.Symlink("run.sh", filepath.Join(src, "link"))
		must(t, time.Minute, "cp", src, vm+":/tmp")
		if r := must(t, time.Minute, "exec", vm, "--", "/tmp/tree/link"); r.stdout != "run\n" {
			t.Fatalf("copied script: %q", r.stdout)
		}
		back := filepath.Join(t.TempDir(), "back")
		must(t, time.Minute, "cp", vm+":/tmp/tree", back)
		for _, rel := range []string{"a/b/data", "run.sh"} {
			a, _ := os.ReadFile(filepath.Join(src, rel))
			b, err := os.ReadFile(filepath.Join(back, rel))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s differs after the round trip: %v", rel, err)
			}
			fa, _ := os.Stat(filepath.Join(src, rel))
			fb, _ := os.Stat(filepath.Join(back, rel))
			if fb == nil || fa.Mode() != fb.Mode() {
				t.Errorf("%s mode changed", rel)
			}
		}
		if fi, _ := os.Stat(filepath.Join(back, "a")); fi == nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("directory mode not kept")
		}
	})
}

func TestHTTPImageHealth(t *testing.T) {
	const vm = "web1"
	must(t, bootTimeout, "up", "--name", vm, "--image", "http", "--memory", "256")
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", vm) })
	r := must(t, time.Minute, "health", vm)
	if !strings.Contains(r.stdout, "httpd") || !strings.Contains(r.stdout, "healthy") {
		t.Fatalf("health:\n%s", r)
	}
}

type safeBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *safeBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

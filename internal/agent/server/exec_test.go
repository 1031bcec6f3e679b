package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

func needSh(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
}

func sh(script string) proto.ExecRequest {
	return proto.ExecRequest{Argv: []string{"sh", "-c", script}}
}

func run(t *testing.T, c *client.Client, req proto.ExecRequest, stdin io.Reader) (string, string, proto.Exit) {
	t.Helper()
	var out, errb bytes.Buffer
	exit, err := c.Exec(testCtx(t), req, stdin, &out, &errb)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Argv, err)
	}
	return out.String(), errb.String(), exit
}

func TestExec(t *testing.T) {
	needSh(t)
	forEachTransport(t, server.Config{Env: []string{"FROM_CONFIG=1", "OVERRIDE=config"}}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		t.Run("stdout and stderr are separate", func(t *testing.T) {
			out, errs, exit := run(t, c, sh("echo out; echo err >&2; echo out2"), nil)
			if out != "out\nout2\n" || errs != "err\n" || exit.Code != 0 {
				t.Fatalf("got stdout %q stderr %q exit %+v", out, errs, exit)
			}
		})

		t.Run("exit codes", func(t *testing.T) {
			for _, code := range []int{0, 1, 3, 255} {
				_, _, exit := run(t, c, sh(fmt.Sprintf("exit %d", code)), nil)
				if exit.Code != code || exit.Signal != "" || exit.TimedOut {
					t.Errorf("exit %d: got %+v", code, exit)
				}
			}
		})

		t.Run("stdin round trip through cat", func(t *testing.T) {
			in := strings.Repeat("hello agent\n", 20000) // ~240 KiB, several frames
			out, _, exit := run(t, c, proto.ExecRequest{Argv: []string{"cat"}}, strings.NewReader(in))
			if exit.Code != 0 || out != in {
				t.Fatalf("exit %+v, got %d bytes back, want %d", exit, len(out), len(in))
			}
		})

		t.Run("no stdin means /dev/null", func(t *testing.T) {
			out, _, _ := run(t, c, proto.ExecRequest{Argv: []string{"cat"}}, nil)
			if out != "" {
				t.Fatalf("cat read %q from an absent stdin", out)
			}
		})

		t.Run("5 MiB output byte-identical", func(t *testing.T) {
			data := make([]byte, 5<<20)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "blob")
			if err := os.WriteFile(f, data, 0o644); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			exit, err := c.Exec(testCtx(t), proto.ExecRequest{Argv: []string{"cat", f}}, nil, h, nil)
			if err != nil || exit.Code != 0 {
				t.Fatalf("exec: %v %+v", err, exit)
			}
			if got, want := h.Sum(nil), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
				t.Fatal("output differs from the file")
			}
		})

		t.Run("env cwd and path lookup", func(t *testing.T) {
			dir := t.TempDir()
			req := sh(`echo "$PATH|$FROM_CONFIG|$OVERRIDE|$REQ"; pwd`)
			req.Env = []string{"OVERRIDE=request", "REQ=x"}
			req.Cwd = dir
			out, _, _ := run(t, c, req, nil)
			want := server.BasePath + "|1|request|x\n" + dir + "\n"
			if out != want {
				t.Fatalf("got %q want %q", out, want)
			}
		})

		t.Run("concurrent execs", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var out bytes.Buffer
					exit, err := c.Exec(testCtx(t), sh(fmt.Sprintf("sleep 0.2; echo %d; exit %d", i, i)), nil, &out, nil)
					if err != nil || exit.Code != i || out.String() != fmt.Sprintf("%d\n", i) {
						t.Errorf("exec %d: err %v exit %+v out %q", i, err, exit, out.String())
					}
				}()
			}
			wg.Wait()
		})

		t.Run("health", func(t *testing.T) {
			h, err := c.Health(testCtx(t))
			if err != nil || !h.Ready || h.Kernel == "" || h.UptimeMS <= 0 {
				t.Fatalf("health: %v %+v", err, h)
			}
		})
	})
}

func TestExecErrors(t *testing.T) {
	needSh(t)
	forEachTransport(t, server.Config{}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		cases := []struct {
			name string
			req  proto.ExecRequest
			code string
		}{
			{"empty argv", proto.ExecRequest{}, proto.CodeBadRequest},
			{"missing program", proto.ExecRequest{Argv: []string{"no-such-program-mvm"}}, proto.CodeNotFound},
			{"relative cwd", proto.ExecRequest{Argv: []string{"true"}, Cwd: "tmp"}, proto.CodeBadRequest},
			{"missing cwd", proto.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, proto.CodeBadRequest},
			{"cwd is a file", proto.ExecRequest{Argv: []string{"true"}, Cwd: "/proc/self/status"}, proto.CodeBadRequest},
			{"bad env", proto.ExecRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, proto.CodeBadRequest},
			{"unknown user", proto.ExecRequest{Argv: []string{"true"}, User: "no-such-user-mvm"}, proto.CodeBadRequest},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Exec(testCtx(t), tc.req, nil, nil, nil)
				e, ok := proto.AsError(err)
				if !ok || e.Code != tc.code {
					t.Fatalf("got %v, want code %s", err, tc.code)
				}
			})
		}
	})
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitDead(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still alive", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// readPids reads whitespace-separated pids the script prints first.
func readPids(t *testing.T, r *bufio.Reader, n int) []int {
	t.Helper()
	var pids []int
	for len(pids) < n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading pids: %v", err)
		}
		for _, f := range strings.Fields(line) {
			p, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			pids = append(pids, p)
		}
	}
	return pids
}

func TestExecLifecycle(t *testing.T) {
	needSh(t)
	forEachTransport(t, server.Config{}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		t.Run("timeout kills the process group", func(t *testing.T) {
			req := sh("sleep 100 & echo $!; sleep 100")
			req.TimeoutMS = 300
			pr, pw := io.Pipe()
			done := make(chan struct{})
			var pids []int
			go func() {
				defer close(done)
				pids = readPids(t, bufio.NewReader(pr), 1)
				_, _ = io.Copy(io.Discard, pr)
			}()
			start := time.Now()
			exit, err := c.Exec(testCtx(t), req, nil, pw, nil)
			pw.Close()
			<-done
			if err != nil || !exit.TimedOut || exit.Signal != "KILL" || exit.Code != 137 {
				t.Fatalf("err %v exit %+v", err, exit)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
			waitDead(t, pids...)
		})

		t.Run("signal delivery", func(t *testing.T) {
			pr, pw := io.Pipe()
			p, err := c.Start(testCtx(t), sh(`trap 'echo got; exit 7' TERM; echo ready; while :; do sleep 0.05; done`), nil, pw, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(pr)
			if line, _ := r.ReadString('\n'); line != "ready\n" {
				t.Fatalf("got %q", line)
			}
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			go func() { _, _ = io.Copy(io.Discard, r) }()
			exit, err := p.Wait()
			pw.Close()
			if err != nil || exit.Code != 7 {
				t.Fatalf("err %v exit %+v", err, exit)
			}
		})

		t.Run("killed by signal reports it", func(t *testing.T) {
			pr, pw := io.Pipe()
			p, err := c.Start(testCtx(t), sh("echo ready; exec sleep 100"), nil, pw, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(pr)
			_, _ = r.ReadString('\n')
			go func() { _, _ = io.Copy(io.Discard, r) }()
			time.Sleep(50 * time.Millisecond) // let exec replace sh
			_ = p.Signal(syscall.SIGTERM)
			exit, err := p.Wait()
			pw.Close()
			if err != nil || exit.Code != 143 || exit.Signal != "TERM" {
				t.Fatalf("err %v exit %+v", err, exit)
			}
		})

		t.Run("client disconnect kills the process", func(t *testing.T) {
			ctx, cancel := context.WithCancel(testCtx(t))
			pr, pw := io.Pipe()
			p, err := c.Start(ctx, sh("sleep 100 & echo $$ $!; wait"), nil, pw, nil)
			if err != nil {
				t.Fatal(err)
			}
			pids := readPids(t, bufio.NewReader(pr), 2)
			cancel()
			pw.Close()
			if _, err := p.Wait(); err == nil {
				t.Fatal("Wait after cancel returned no error")
			}
			waitDead(t, pids...)
		})
	})
}

func TestExecUser(t *testing.T) {
	needSh(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to switch users")
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	_ = os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n"), 0o644)
	_ = os.WriteFile(group, []byte("root:x:0:\nalice:x:1234:\nstaff:x:50:alice\n"), 0o644)
	forEachTransport(t, server.Config{PasswdFile: passwd, GroupFile: group}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		for _, tc := range []struct{ user, want string }{
			{"alice", "1234 1234 1234 50 /home/alice alice"},
			{"4321:99", "4321 99 99 / "},
			{"alice:staff", "1234 50 50 /home/alice alice"},
		} {
			req := proto.ExecRequest{Argv: []string{"sh", "-c", `echo $(id -u) $(id -g) $(id -G) $HOME $USER`}, User: tc.user, Cwd: "/"}
			out, _, exit := run(t, c, req, nil)
			if got := strings.TrimSpace(out); got != strings.TrimSpace(tc.want) || exit.Code != 0 {
				t.Errorf("user %s: got %q (exit %+v), want %q", tc.user, got, exit, tc.want)
			}
		}
	})
}

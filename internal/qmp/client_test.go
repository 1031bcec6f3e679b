package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const greeting72 = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}`

// fakeServer serves one connection with handle, which gets each command the
// client sends and writes raw lines back.
func fakeServer(t *testing.T, handle func(cmd map[string]any, w func(string))) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w := func(s string) { conn.Write([]byte(s + "\r\n")) }
		w(greeting72)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd map[string]any
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				w(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
				continue
			}
			handle(cmd, w)
		}
	}()
	return sock
}

func idOf(cmd map[string]any) string {
	b, _ := json.Marshal(cmd["id"])
	return string(b)
}

func TestClientHandshakeEventsAndReplies(t *testing.T) {
	sock := fakeServer(t, func(cmd map[string]any, w func(string)) {
		id := idOf(cmd)
		switch cmd["execute"] {
		case "qmp_capabilities":
			w(`{"return": {}, "id": ` + id + `}`)
		case "query-status":
			// An event and a stale reply arrive before ours.
			w(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`)
			w(`{"return": {"status": "bogus"}, "id": 999}`)
			w(`{"return": {"status": "paused", "singlestep": false, "running": false}, "id": ` + id + `}`)
		case "cont":
			if cmd["arguments"] != nil {
				w(`{"error": {"class": "GenericError", "desc": "unexpected args"}, "id": ` + id + `}`)
				return
			}
			w(`{"return": {}, "id": ` + id + `}`)
		default:
			w(`{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd["execute"].(string) + ` has not been found"}, "id": ` + id + `}`)
		}
	})
	var events []Event
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock, WithEvents(func(e Event) { events = append(events, e) }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.Greeting().Version; v.String() != "7.2.0" || !v.AtLeast(7, 2) || v.AtLeast(8, 2) {
		t.Fatalf("version = %+v", v)
	}
	st, err := c.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "paused" || st.Running {
		t.Fatalf("status = %+v", st)
	}
	if len(events) != 1 || events[0].Name != "STOP" || events[0].Time.Unix() != 1700000000 {
		t.Fatalf("events = %+v", events)
	}
	if err := c.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	err = c.Execute(ctx, "no-such-thing", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("err = %v, want CommandNotFound", err)
	}
	// The connection stays usable after a QEMU-side error.
	if _, err := c.QueryStatus(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientDeadline(t *testing.T) {
	sock := fakeServer(t, func(cmd map[string]any, w func(string)) {
		if cmd["execute"] == "qmp_capabilities" {
			w(`{"return": {}, "id": ` + idOf(cmd) + `}`)
		}
		// Anything else: never answer.
	})
	c, err := Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.QueryStatus(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	// The stream position is unknown now: further use fails fast.
	if _, err := c.QueryStatus(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("err after timeout = %v, want ErrClosed", err)
	}
}

func TestClientCancel(t *testing.T) {
	sock := fakeServer(t, func(cmd map[string]any, w func(string)) {
		if cmd["execute"] == "qmp_capabilities" {
			w(`{"return": {}, "id": ` + idOf(cmd) + `}`)
		}
	})
	c, err := Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := c.QueryStatus(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
}

func TestClientBadGreeting(t *testing.T) {
	for name, first := range map[string]string{
		"garbage":   `hello there`,
		"reply":     `{"return": {}}`,
		"noversion": `{"QMP": {"capabilities": []}}`,
		"huge":      `{"QMP": "` + strings.Repeat("x", MaxLine+10) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "q.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				conn.Write([]byte(first + "\r\n"))
				time.Sleep(time.Second)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if c, err := Dial(ctx, sock); err == nil {
				c.Close()
				t.Fatal("Dial succeeded on a bad greeting")
			}
		})
	}
}

// TestRealQEMU talks to a real QEMU started paused (-S), which needs no guest.
func TestRealQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("needs qemu-system-x86_64")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-no-user-config",
		"-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var c *Client
	for {
		if c, err = Dial(ctx, sock); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	if c.Greeting().Version.Major < 2 {
		t.Fatalf("greeting = %+v", c.Greeting())
	}
	st, err := c.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Running || st.Status != "prelaunch" {
		t.Fatalf("status = %+v, want prelaunch", st)
	}
	// A descriptor handed over with SendFD is known to QEMU by its name:
	// closefd succeeds for it, once, and fails for a name never sent.
	f, err := os.CreateTemp(dir, "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.SendFD(ctx, "state", f); err != nil {
		t.Fatal(err)
	}
	if err := c.Execute(ctx, "closefd", map[string]string{"fdname": "state"}, nil); err != nil {
		t.Fatalf("closefd of the sent descriptor: %v", err)
	}
	var qe *Error
	if err := c.Execute(ctx, "closefd", map[string]string{"fdname": "state"}, nil); !errors.As(err, &qe) {
		t.Fatalf("closefd twice: %v, want a QMP error", err)
	}
	if err := c.Quit(ctx); err != nil && !errors.Is(err, ErrClosed) {
		t.Logf("quit: %v (connection may drop before the reply)", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu exit: %v", err)
	}
}

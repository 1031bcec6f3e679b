package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

func frame(t proto.Type, payload string) []byte {
	var b bytes.Buffer
	_ = proto.WriteFrame(&b, t, []byte(payload))
	return b.Bytes()
}

func rawHeader(n uint32, typ byte) []byte {
	b := make([]byte, 5)
	binary.BigEndian.PutUint32(b, n)
	b[4] = typ
	return b
}

var hello = frame(proto.THello, `{"version":1,"min_version":1}`)

// readAll collects the frames the server sends until it closes.
func readAll(t *testing.T, c net.Conn) []proto.Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []proto.Frame
	for {
		f, err := proto.ReadFrame(c)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("server neither answered nor closed within 5s")
			}
			return out
		}
		out = append(out, f)
	}
}

func errCode(t *testing.T, frames []proto.Frame) string {
	t.Helper()
	if len(frames) == 0 || frames[len(frames)-1].Type != proto.TError {
		t.Fatalf("want a final error frame, got %v", frames)
	}
	var e proto.Error
	if err := json.Unmarshal(frames[len(frames)-1].Payload, &e); err != nil {
		t.Fatal(err)
	}
	return e.Code
}

func TestBadInputKeepsServing(t *testing.T) {
	cases := []struct {
		name  string
		input [][]byte
		code  string // "" = just closed
		close bool   // half-close after writing (truncation)
	}{
		{"garbage", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")}, proto.CodeBadRequest, false},
		{"oversized frame", [][]byte{rawHeader(proto.MaxFrame+1, byte(proto.THello))}, proto.CodeBadRequest, false},
		{"empty frame", [][]byte{{0, 0, 0, 0}}, proto.CodeBadRequest, false},
		{"unknown type", [][]byte{rawHeader(1, 0x7e)}, proto.CodeBadRequest, false},
		{"truncated frame", [][]byte{rawHeader(100, byte(proto.THello)), []byte("{")}, "", true},
		{"request before hello", [][]byte{frame(proto.TRequest, `{"op":"health"}`)}, proto.CodeBadRequest, false},
		{"bad hello json", [][]byte{frame(proto.THello, `{"version":1,"evil":true}`)}, proto.CodeBadRequest, false},
		{"version too new", [][]byte{frame(proto.THello, `{"version":9,"min_version":9}`)}, proto.CodeVersion, false},
		{"version zero", [][]byte{frame(proto.THello, `{"version":0}`)}, proto.CodeVersion, false},
		{"unknown op", [][]byte{hello, frame(proto.TRequest, `{"op":"teleport"}`)}, proto.CodeUnknownOp, false},
		{"bad exec args", [][]byte{hello, frame(proto.TRequest, `{"op":"exec","args":{"argv":"sh"}}`)}, proto.CodeBadRequest, false},
		{"shutdown unsupported", [][]byte{hello, frame(proto.TRequest, `{"op":"shutdown"}`)}, proto.CodeUnavailable, false},
	}
	dial, c := authedTCP(t, server.Config{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, b := range tc.input {
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				_ = conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			frames := readAll(t, conn)
			if tc.code != "" {
				if got := errCode(t, frames); got != tc.code {
					t.Fatalf("code %s, want %s", got, tc.code)
				}
			}
			// The agent must still answer a well-behaved client.
			if _, err := c.Health(testCtx(t)); err != nil {
				t.Fatalf("health after %s: %v", tc.name, err)
			}
		})
	}
}

func TestGarbageDuringExec(t *testing.T) {
	needSh(t)
	dial, _ := authedTCP(t, server.Config{})
	conn, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(hello)
	_, _ = conn.Write(frame(proto.TRequest, `{"op":"exec","args":{"argv":["sleep","100"]}}`))
	_, _ = conn.Write(rawHeader(proto.MaxFrame+5, byte(proto.TStdin)))
	frames := readAll(t, conn)
	if len(frames) < 3 || frames[0].Type != proto.THelloAck || frames[1].Type != proto.TResponse {
		t.Fatalf("frames %v", frames)
	}
	if code := errCode(t, frames); code != proto.CodeBadRequest {
		t.Fatalf("code %s", code)
	}
	var started struct{ Pid int }
	_ = json.Unmarshal(mustResult(t, frames[1]), &started)
	waitDead(t, started.Pid)
}

func mustResult(t *testing.T, f proto.Frame) json.RawMessage {
	var r proto.Response
	if err := json.Unmarshal(f.Payload, &r); err != nil {
		t.Fatal(err)
	}
	return r.Result
}

func TestNoHelloIsDropped(t *testing.T) {
	ln, dial := tcpTransport(t)
	startServer(t, server.Config{HandshakeTimeout: 200 * time.Millisecond}, ln)
	conn, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("read %d, %v; want EOF", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dropped after %v", d)
	}
	// Half a hello is no better than none.
	conn2, _ := dial(context.Background())
	defer conn2.Close()
	_, _ = conn2.Write(hello[:3])
	frames := readAll(t, conn2)
	if len(frames) != 0 {
		t.Fatalf("got %v", frames)
	}
}

func TestHealthStagesAndShutdown(t *testing.T) {
	stages := server.NewStages(proto.StageKernel, proto.StageRoot)
	stages.Mark(proto.StageKernel, "6.1")
	reboots := make(chan bool, 1)
	cfg := server.Config{Stages: stages, Shutdown: func(reboot bool) { reboots <- reboot }, AgentVersion: "test"}
	forEachTransport(t, cfg, func(t *testing.T, c *client.Client, _ client.Dialer) {
		h, err := c.Health(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		want := []proto.Stage{{Name: proto.StageKernel, Done: true, Detail: "6.1"}, {Name: proto.StageRoot}}
		if h.Ready || len(h.Stages) != 2 || h.Stages[0] != want[0] || h.Stages[1] != want[1] {
			t.Fatalf("health %+v", h)
		}
		for _, reboot := range []bool{false, true} {
			if err := c.Shutdown(testCtx(t), reboot); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-reboots:
				if got != reboot {
					t.Fatalf("reboot %v, want %v", got, reboot)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("shutdown callback not called")
			}
		}
	})
	stages.Mark(proto.StageRoot, "")
	if !stages.Ready() {
		t.Fatal("all stages marked but not ready")
	}
}

func TestClientContextCancelDuringHandshake(t *testing.T) {
	// A listener that accepts but never answers: the client must give up
	// when ctx ends, not hang.
	ln, dial := tcpTransport(t)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := client.New(dial).Health(ctx); err == nil {
		t.Fatal("health against a silent peer succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

// preamble stands in for TLS: both sides wrap the raw stream before frames.
const preamble = "MVM!"

func serverWrap(c net.Conn) (net.Conn, error) {
	b := make([]byte, len(preamble))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != preamble {
		return nil, io.ErrUnexpectedEOF
	}
	return c, nil
}

func clientWrap(c net.Conn) (net.Conn, error) {
	_, err := io.WriteString(c, preamble)
	return c, err
}

func TestWrap(t *testing.T) {
	needSh(t)
	ln, dial := tcpTransport(t)
	startServer(t, server.Config{Wrap: serverWrap}, ln)
	c := client.New(dial, client.WithWrap(clientWrap))
	var out bytes.Buffer
	if exit, err := c.Exec(testCtx(t), proto.ExecRequest{Argv: []string{"echo", "wrapped"}}, nil, &out, nil); err != nil || exit.Code != 0 || out.String() != "wrapped\n" {
		t.Fatalf("wrapped exec: %v %+v %q", err, exit, out.String())
	}
	if _, err := client.New(dial).Health(testCtx(t)); err == nil {
		t.Fatal("unwrapped client was served")
	}
}

// authedTCP serves cfg with authentication on loopback TCP and returns a
// dialer of authenticated raw connections (for hand-made frames) and a client.
func authedTCP(t *testing.T, cfg server.Config) (client.Dialer, *client.Client) {
	t.Helper()
	ln, dial := tcpTransport(t)
	keys := newTestKeys(t)
	cfg.Wrap = keys.serverWrap
	startServer(t, cfg, ln)
	authDial := func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return keys.clientWrap(c)
	}
	return authDial, client.New(dial, client.WithWrap(keys.clientWrap))
}

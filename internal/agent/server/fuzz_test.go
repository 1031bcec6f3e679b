package server

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/reaper"
)

// bytesConn is a net.Conn that reads a fixed input then EOF and discards writes.
type bytesConn struct{ r *bytes.Reader }

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.UnixAddr{} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.UnixAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

func seedFrames(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func fr(t proto.Type, s string) []byte {
	var b bytes.Buffer
	_ = proto.WriteFrame(&b, t, []byte(s))
	return b.Bytes()
}

// FuzzHandleConn feeds arbitrary bytes to the connection handler: it must
// never panic or hang. Exec is routed to a starter that refuses, so fuzzing
// never runs real programs.
func FuzzHandleConn(f *testing.F) {
	hello := fr(proto.THello, `{"version":1,"min_version":1}`)
	f.Add([]byte{})
	f.Add(hello)
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"health"}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"exec","args":{"argv":["true"],"stdin":true}}`), fr(proto.TStdin, "x"), fr(proto.TStdinEOF, "")))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"shutdown","args":{"reboot":true}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"nope"}`)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"console","args":{"cols":80,"rows":24}}`), fr(proto.TResize, `{"cols":100,"rows":30}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"forward","args":{"port":8080}}`), fr(proto.TData, "GET / HTTP/1.0\r\n\r\n"), fr(proto.TDataEOF, "")))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"copy-in","args":{"path":"/dst"}}`), fr(proto.TData, "not a tar"), fr(proto.TDataEOF, "")))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"copy-out","args":{"path":"/"}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"diff","args":{"root":"/"}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"post-restore","args":{"unix_nano":1,"hostname":"clone","entropy":"AAAA"}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"post-restore","args":{"hostname":"clone","network":{"interfaces":[{"mac":"02:00:0a:58:00:06","address":"10.88.0.6/24","gateway":"10.88.0.1","mtu":1500}],"dns":["10.88.0.1"],"search":["default"],"hosts":[{"ip":"10.88.0.6","names":["clone"]}]}}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"secrets","args":{"secrets":[{"name":"db_password","data":"aHVudGVyMg=="},{"name":"tls.key","data":"","mode":288}]}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"secrets","args":{"secrets":[]}}`)))
	f.Add(seedFrames(hello, fr(proto.TRequest, `{"op":"secrets","args":{"secrets":[{"name":"../../etc/passwd","data":"eA=="}]}}`)))
	// Nothing a fuzzed request does may reach this machine: programs are
	// refused, copies, diffs and secrets are confined to a temp dir, and
	// post-restore, forward and the secrets tmpfs talk to fakes instead of
	// the clock, hostname, network and mount table.
	s := New(Config{
		Log:              discardLogger(),
		HandshakeTimeout: time.Second,
		Stages:           NewStages(proto.StageKernel),
		Shutdown:         func(bool) {},
		CopyRoot:         f.TempDir(),
	})
	s.start = func(string, []string, *os.ProcAttr) (*reaper.Process, error) {
		return nil, errors.New("exec disabled while fuzzing")
	}
	s.sys = fakeGuestSys(nil)
	(&fakeMounts{}).install(&s.sys)
	f.Fuzz(func(t *testing.T, in []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.handle(context.Background(), &bytesConn{r: bytes.NewReader(in)})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("handler hung on %q", in)
		}
	})
}

// FuzzParseDB checks the /etc/passwd parser on arbitrary input.
func FuzzParseDB(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/sh\n# c\n\n:::\nbad\n"), 7)
	f.Add([]byte("staff:x:50:a,b\n"), 3)
	f.Fuzz(func(t *testing.T, in []byte, min int) {
		if min < 1 || min > 10 {
			return
		}
		for _, e := range parseDB(bytes.NewReader(in), min) {
			if len(e) < min || e[0] == "" {
				t.Fatalf("entry %q violates min fields %d", e, min)
			}
		}
	})
}

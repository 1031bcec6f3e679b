package standin

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// connectTimeout is how long Firecracker gives a CONNECT: to arrive, and
// the guest to accept.
const connectTimeout = 2 * time.Second

// bridge handles one host connection on the vsock socket. Like
// Firecracker, it closes the stream (EOF before OK) when the line is
// malformed or the guest does not accept within connectTimeout.
func (s *Server) bridge(c net.Conn, hostPort uint32) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(connectTimeout))
	port, err := readConnect(c)
	if err != nil {
		s.Log.Debug("vsock: bad CONNECT", "err", err)
		return
	}
	s.mu.Lock()
	g := s.guest
	s.mu.Unlock()
	if g == nil {
		return // not started: nothing listens in the guest
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	gc, err := g.DialAgent(ctx, port)
	cancel()
	if err != nil {
		s.Log.Debug("vsock: guest port unreachable", "port", port, "err", err)
		return
	}
	defer gc.Close()
	c.SetDeadline(time.Time{})
	c.SetWriteDeadline(time.Now().Add(connectTimeout))
	if _, err := io.WriteString(c, "OK "+strconv.FormatUint(uint64(hostPort), 10)+"\n"); err != nil {
		return
	}
	c.SetWriteDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() { io.Copy(gc, c); closeWrite(gc); done <- struct{}{} }()
	go func() { io.Copy(c, gc); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// readConnect reads "CONNECT <port>\n" (or lower-case "connect") byte by
// byte, at most 32 bytes, so no byte after the line is consumed.
func readConnect(r io.Reader) (uint32, error) {
	var buf [32]byte
	for n := 0; n < len(buf); n++ {
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			return 0, err
		}
		if buf[n] == '\n' {
			return ParseConnect(string(buf[:n]))
		}
	}
	return 0, fmt.Errorf("CONNECT line longer than %d bytes", len(buf))
}

// ParseConnect parses the line (without its newline).
func ParseConnect(line string) (uint32, error) {
	verb, arg, ok := strings.Cut(line, " ")
	if !ok || (verb != "CONNECT" && verb != "connect") {
		return 0, fmt.Errorf("not a CONNECT line: %q", line)
	}
	p, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("CONNECT %q: bad port", arg)
	}
	return uint32(p), nil
}

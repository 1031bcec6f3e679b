// Package hybridvsock dials a guest's AF_VSOCK port through Firecracker's
// hybrid vsock: a unix socket on the host where each connection starts with
// the line "CONNECT <port>\n" and Firecracker answers "OK <host_port>\n" once
// the guest accepted.
//
// Hand-written because no maintained library does this well: the Firecracker
// Go SDK retries forever without a deadline, treats a not-yet-created socket
// as fatal, and reads the OK line through a buffer, losing guest bytes that
// arrive with it. Here every attempt is bounded by the context, a missing or
// refusing socket is retried (Firecracker may still be starting), and the OK
// line is read byte by byte so the stream after it is untouched.
package hybridvsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options tune Dial; zero values take the defaults.
type Options struct {
	// Retry is the pause between attempts (default 50 ms).
	Retry time.Duration
	// AttemptTimeout bounds one attempt: connect, CONNECT line, OK line
	// (default 2 s; Firecracker gives the guest 2 s to accept).
	AttemptTimeout time.Duration
}

// maxLine bounds the OK line: "OK " + a uint32 + "\n" fits easily.
const maxLine = 32

// ErrBadReply is wrapped when Firecracker answers something other than OK.
var ErrBadReply = errors.New("hybrid vsock: unexpected reply")

// Dial connects to guest port through the hybrid vsock socket at udsPath,
// retrying until ctx ends (the caller must give ctx a deadline). Retried:
// the socket not existing yet or refusing, and EOF instead of OK (nothing
// listens on the port yet). The returned conn carries guest data verbatim.
func Dial(ctx context.Context, udsPath string, port uint32, o Options) (net.Conn, error) {
	if o.Retry <= 0 {
		o.Retry = 50 * time.Millisecond
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 2 * time.Second
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var last error
	for {
		c, err := attempt(ctx, udsPath, port, o.AttemptTimeout)
		if err == nil {
			return c, nil
		}
		if !retryable(err) {
			return nil, err
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hybrid vsock %s port %d: %w (last attempt: %v)", udsPath, port, ctx.Err(), last)
		case <-time.After(o.Retry):
		}
	}
}

func attempt(ctx context.Context, udsPath string, port uint32, timeout time.Duration) (net.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(actx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	deadline, _ := actx.Deadline()
	_ = c.SetDeadline(deadline)
	// One write: Firecracker reads the line from a non-blocking socket.
	if _, err := io.WriteString(c, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("hybrid vsock: write CONNECT: %w", err)
	}
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, err := ParseOK(line); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// ParseOK checks Firecracker's reply line (without the newline) and returns
// the host-side port it names.
func ParseOK(line string) (uint32, error) {
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("%w %q", ErrBadReply, line)
	}
	p, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w %q: bad port", ErrBadReply, line)
	}
	return uint32(p), nil
}

// readLine reads up to and including '\n', one byte at a time, so no guest
// byte after the line is consumed.
func readLine(r io.Reader) (string, error) {
	var buf [maxLine]byte
	for n := 0; n < maxLine; n++ {
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return "", err
		}
		if buf[n] == '\n' {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxLine)
}

func retryable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

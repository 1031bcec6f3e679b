// Package qmp is a small client for the QEMU Machine Protocol over a unix
// socket: greeting, capabilities handshake, commands matched by id, and
// asynchronous events delivered to an optional callback. Every read is bounded
// by the caller's context.
package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds an operation whose context has no deadline, so a
// wedged QEMU never hangs a caller forever.
const DefaultTimeout = 30 * time.Second

// ErrClosed is returned after the connection failed or was closed. A failed
// read leaves the stream at an unknown position, so the client does not reuse it.
var ErrClosed = errors.New("qmp connection closed")

// Client is one QMP connection. Methods are safe for concurrent use; commands
// run one at a time.
type Client struct {
	conn     net.Conn
	r        *bufio.Reader
	onEvent  func(Event)
	greeting Greeting

	mu     sync.Mutex
	nextID uint64
	broken error
}

// Option configures a Client.
type Option func(*Client)

// WithEvents delivers every event read while waiting for replies to fn. fn
// runs on the caller's goroutine and must not call back into the Client.
func WithEvents(fn func(Event)) Option { return func(c *Client) { c.onEvent = fn } }

// Dial connects to the QMP unix socket at path and completes the handshake.
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	c, err := New(ctx, conn, opts...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// New runs the handshake over an established connection. On error the caller
// still owns conn.
func New(ctx context.Context, conn net.Conn, opts ...Option) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	for _, o := range opts {
		o(c)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.bound(ctx)
	defer stop()
	for {
		m, err := c.readMessage()
		if err != nil {
			return nil, fmt.Errorf("read qmp greeting: %w", ctxErr(ctx, err))
		}
		if m.kind == kindGreeting {
			c.greeting = m.greeting
			break
		}
		if m.kind == kindEvent {
			c.deliver(m.event)
			continue
		}
		return nil, errors.New("read qmp greeting: got a reply before the greeting")
	}
	if err := c.executeLocked(ctx, "qmp_capabilities", nil, nil, nil); err != nil {
		return nil, fmt.Errorf("qmp capabilities: %w", err)
	}
	return c, nil
}

// Greeting returns what the server announced.
func (c *Client) Greeting() Greeting { return c.greeting }

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = ErrClosed
	}
	c.mu.Unlock()
	return c.conn.Close()
}

// Execute runs cmd with args (nil or a value marshalling to a JSON object) and
// decodes the return value into out (nil to discard it). A QEMU-side failure
// is returned as *Error.
func (c *Client) Execute(ctx context.Context, cmd string, args, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.bound(ctx)
	defer stop()
	if err := c.executeLocked(ctx, cmd, args, out, nil); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return nil
}

// SendFD hands QEMU the descriptor of f under name (the getfd command, with
// the descriptor in the same write as SCM_RIGHTS), for URIs such as "fd:name".
// It needs a unix socket connection.
func (c *Client) SendFD(ctx context.Context, name string, f *os.File) error {
	_, ok := c.conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("qmp getfd: descriptors pass only over a unix socket, not %T", c.conn)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.bound(ctx)
	defer stop()
	err := c.executeLocked(ctx, "getfd", map[string]string{"fdname": name}, nil, syscall.UnixRights(int(f.Fd())))
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("qmp getfd: %w", err)
	}
	return nil
}

type command struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// executeLocked sends cmd, with oob (nil: none) as ancillary data of the
// same write, and waits for its reply.
func (c *Client) executeLocked(ctx context.Context, cmd string, args, out any, oob []byte) error {
	if c.broken != nil {
		return c.broken
	}
	c.nextID++
	id := c.nextID
	b, err := json.Marshal(command{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	b = append(b, '\n')
	if oob != nil {
		_, _, err = c.conn.(*net.UnixConn).WriteMsgUnix(b, oob, nil)
	} else {
		_, err = c.conn.Write(b)
	}
	if err != nil {
		return c.fail(ctxErr(ctx, err))
	}
	want := strconv.FormatUint(id, 10)
	for {
		m, err := c.readMessage()
		if err != nil {
			return c.fail(ctxErr(ctx, err))
		}
		switch m.kind {
		case kindEvent:
			c.deliver(m.event)
			continue
		case kindGreeting:
			return c.fail(errors.New("unexpected second greeting"))
		}
		// A reply without id answers a command QEMU could not parse; ours
		// are always well-formed, so it can only be for this one.
		if m.id != nil && string(bytes.TrimSpace(m.id)) != want {
			continue // stale reply to a command whose caller gave up
		}
		if m.err != nil {
			return m.err
		}
		if out != nil {
			if err := json.Unmarshal(m.ret, out); err != nil {
				return fmt.Errorf("decode reply: %w", err)
			}
		}
		return nil
	}
}

// readMessage reads one non-empty line, refusing lines longer than MaxLine.
func (c *Client) readMessage() (message, error) {
	for {
		line, err := readLine(c.r, MaxLine)
		if err != nil {
			return message{}, err
		}
		m, err := decodeLine(line)
		if errors.Is(err, errEmptyLine) {
			continue
		}
		return m, err
	}
}

func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("line exceeds %d bytes", limit)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func (c *Client) deliver(ev Event) {
	if c.onEvent != nil {
		c.onEvent(ev)
	}
}

func (c *Client) fail(err error) error {
	c.broken = fmt.Errorf("%w: %v", ErrClosed, err)
	c.conn.Close()
	return err
}

// bound applies ctx's deadline (or DefaultTimeout) to the connection and
// interrupts blocked I/O when ctx is cancelled.
func (c *Client) bound(ctx context.Context) (stop func()) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultTimeout)
	}
	c.conn.SetDeadline(dl)
	cancel := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		cancel()
		c.conn.SetDeadline(time.Time{})
	}
}

// ctxErr names the context as the cause when it ended the I/O. The socket
// deadline can fire a hair before ctx's own timer, so a timeout at or past
// ctx's deadline counts as the deadline.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	var ne net.Error
	if dl, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(dl) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Stream is the byte stream of a forward or copy operation: Read returns
// the agent's TData frames and io.EOF at its TDataEOF, Write sends TData,
// CloseWrite sends TDataEOF. An agent error mid-stream comes out of Read
// (or Result) as *proto.Error.
type Stream struct {
	cn  *conn
	buf []byte
	eof bool
}

var _ io.ReadWriteCloser = (*Stream)(nil)

func (c *Client) stream(ctx context.Context, op string, args any) (*Stream, error) {
	cn, _, err := c.call(ctx, op, args)
	if err != nil {
		return nil, err
	}
	return &Stream{cn: cn}, nil
}

// Forward connects to TCP port req.Port on the guest's loopback. Use the
// stream like a TCP connection; Close ends it.
func (c *Client) Forward(ctx context.Context, req proto.ForwardRequest) (*Stream, error) {
	return c.stream(ctx, proto.OpForward, req)
}

func (s *Stream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		f, err := proto.ReadFrame(s.cn.Conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("agent stream: %w", err)
		}
		switch f.Type {
		case proto.TData:
			s.buf = f.Payload
		case proto.TDataEOF:
			s.eof = true
		case proto.TError:
			return 0, decodeError(f)
		default:
			return 0, fmt.Errorf("agent stream: unexpected %s frame", f.Type)
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *Stream) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), proto.MaxData)
		if err := s.cn.send(proto.TData, p[:c]); err != nil {
			return n, err
		}
		n, p = n+c, p[c:]
	}
	return n, nil
}

// CloseWrite tells the agent we will send no more data.
func (s *Stream) CloseWrite() error { return s.cn.send(proto.TDataEOF, nil) }

// Close ends the operation.
func (s *Stream) Close() error {
	s.cn.close()
	return nil
}

// Result reads the operation's final TDone into v (after the data stream,
// if the agent sends one).
func (s *Stream) Result(v any) error {
	for {
		f, err := proto.ReadFrame(s.cn.Conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("agent stream: no result: %w", err)
		}
		switch f.Type {
		case proto.TDone:
			return json.Unmarshal(f.Payload, v)
		case proto.TError:
			return decodeError(f)
		case proto.TDataEOF:
			s.eof = true
		default:
			return fmt.Errorf("agent stream: unexpected %s frame before the result", f.Type)
		}
	}
}

// CopyIn sends a tar archive (r) to be extracted at req.Path in the guest:
// into it when it is a directory, else as that name.
func (c *Client) CopyIn(ctx context.Context, req proto.CopyRequest, r io.Reader) (*proto.CopyResult, error) {
	s, err := c.stream(ctx, proto.OpCopyIn, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var res proto.CopyResult
	done := make(chan error, 1)
	go func() {
		err := s.Result(&res)
		if err != nil {
			s.cn.Conn.Close() // the agent gave up: stop sending
		}
		done <- err
	}()
	_, werr := io.Copy(s, r)
	if werr == nil {
		werr = s.CloseWrite()
	}
	if err := <-done; err != nil {
		return nil, wrapCtx(ctx, "copy-in", err)
	}
	if werr != nil {
		return nil, wrapCtx(ctx, "copy-in", werr)
	}
	return &res, nil
}

// CopyOut receives a tar archive of req.Path in the guest and writes it to w.
func (c *Client) CopyOut(ctx context.Context, req proto.CopyRequest, w io.Writer) (*proto.CopyResult, error) {
	s, err := c.stream(ctx, proto.OpCopyOut, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if _, err := io.Copy(w, s); err != nil {
		return nil, wrapCtx(ctx, "copy-out", err)
	}
	var res proto.CopyResult
	if err := s.Result(&res); err != nil {
		return nil, wrapCtx(ctx, "copy-out", err)
	}
	return &res, nil
}

func wrapCtx(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("agent %s: %w", op, ctx.Err())
	}
	if _, ok := proto.AsError(err); ok {
		return err
	}
	return fmt.Errorf("agent %s: %w", op, err)
}

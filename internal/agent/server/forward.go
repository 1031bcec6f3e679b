package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// forwardDialTimeout bounds the connect to the guest port.
const forwardDialTimeout = 5 * time.Second

// forward connects to a loopback TCP port inside the guest and relays bytes
// until both directions have ended. It needs no guest network: only lo.
func (s *Server) forward(ctx context.Context, w *wire, args json.RawMessage) error {
	var req proto.ForwardRequest
	if err := decodeArgs(args, &req); err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "forward args: %v", err))
	}
	if req.Port == 0 {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "forward: port must be 1..65535"))
	}
	host := req.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return w.fail(proto.Errorf(proto.CodeDenied, "forward: %q is not a loopback address; only ports on the guest's loopback can be forwarded", host))
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(req.Port)))
	tcp, err := s.sys.dial(ctx, addr)
	if err != nil {
		code := proto.CodeUnavailable
		if !errors.Is(err, syscall.ECONNREFUSED) {
			code = proto.CodeInternal
		}
		return w.fail(proto.Errorf(code, "forward: connect %s in the guest: %v", addr, err))
	}
	defer tcp.Close()
	if err := respond(w, nil); err != nil {
		return err
	}

	errc := make(chan error, 2)
	go func() { // guest port → client
		_, err := io.Copy(dataWriter{w}, tcp)
		if err == nil {
			err = dataWriter{w}.CloseWrite()
		}
		errc <- err
	}()
	go func() { // client → guest port
		_, err := io.Copy(tcp, &dataReader{w: w})
		if err == nil {
			if cw, ok := tcp.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		errc <- err
	}()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			if e, ok := proto.AsError(err); ok {
				_ = w.fail(e)
			}
			// Either side failing ends both: closing unblocks the other copy.
			tcp.Close()
			w.conn.Close()
		}
	}
	if first != nil {
		return fmt.Errorf("forward %s: %w", addr, first)
	}
	return nil
}

package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// wire serialises frame writes on one connection; every write has a deadline
// so a client that stops reading cannot pin a goroutine forever.
type wire struct {
	conn    net.Conn
	timeout time.Duration
	mu      sync.Mutex
}

func (w *wire) send(t proto.Type, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return proto.WriteFrame(w.conn, t, payload)
}

func (w *wire) sendJSON(t proto.Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.send(t, b)
}

// fail answers with a TError frame and returns e for logging.
func (w *wire) fail(e *proto.Error) error {
	_ = w.sendJSON(proto.TError, e)
	return e
}

// decodeArgs decodes a request's args strictly; empty args mean the zero value.
func decodeArgs(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

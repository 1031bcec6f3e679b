// Package proto is the wire format spoken between mvmctl and mvm-agent.
//
// Every connection (one per operation) carries a sequence of frames:
//
//	| length uint32 BE | type uint8 | payload (length-1 bytes) |
//
// length counts the type byte and the payload, so the smallest frame is 1.
// Control frames carry JSON; data frames carry raw bytes. See docs/agent-protocol.md.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this build speaks.
const Version = 1

// MinVersion is the oldest protocol version this build accepts.
const MinVersion = 1

// MaxFrame bounds a frame's length field (type byte + payload). Larger frames are
// refused before any allocation, so a hostile peer cannot make us buffer gigabytes.
const MaxFrame = 1 << 20

// MaxData is the largest data chunk a sender puts in one stdin/stdout/stderr frame.
const MaxData = 64 << 10

// Type identifies a frame.
type Type uint8

const (
	THello     Type = 0x01 // JSON Hello, client → server, first frame
	THelloAck  Type = 0x02 // JSON HelloAck, server → client
	TRequest   Type = 0x03 // JSON Request, client → server, once per connection
	TResponse  Type = 0x04 // JSON Response, server → client, once per connection
	TStdin     Type = 0x10 // raw bytes, client → server
	TStdout    Type = 0x11 // raw bytes, server → client
	TStderr    Type = 0x12 // raw bytes, server → client
	TStdinEOF  Type = 0x13 // empty, client → server: no more stdin
	TExit      Type = 0x20 // JSON Exit, server → client, last frame of exec/console
	TSignal    Type = 0x21 // JSON Signal, client → server
	TResize    Type = 0x22 // JSON Resize, client → server
	TData      Type = 0x30 // raw bytes, either way (forward, copy)
	TDataEOF   Type = 0x31 // empty, either way: sender is done writing
	TError     Type = 0x7f // JSON Error, server → client, ends the operation
	tFirstFree Type = 0x80
)

var typeNames = map[Type]string{
	THello: "hello", THelloAck: "hello-ack", TRequest: "request", TResponse: "response",
	TStdin: "stdin", TStdout: "stdout", TStderr: "stderr", TStdinEOF: "stdin-eof",
	TExit: "exit", TSignal: "signal", TResize: "resize", TData: "data", TDataEOF: "data-eof",
	TError: "error",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Known reports whether t is a frame type this version defines.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// Frame is one decoded frame.
type Frame struct {
	Type    Type
	Payload []byte
}

// Errors returned by the decoder. They are distinct so callers and tests can tell
// a hostile or broken peer from a closed connection.
var (
	ErrFrameTooLarge = errors.New("frame too large")
	ErrEmptyFrame    = errors.New("empty frame")
	ErrUnknownType   = errors.New("unknown frame type")
)

// ReadFrame reads one frame. It allocates at most MaxFrame bytes and returns
// io.EOF only when the stream ends cleanly between frames.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return Frame{}, ErrEmptyFrame
	}
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrFrameTooLarge, n, MaxFrame)
	}
	if _, err := io.ReadFull(r, hdr[4:5]); err != nil {
		return Frame{}, unexpected(err)
	}
	t := Type(hdr[4])
	if !t.Known() {
		return Frame{}, fmt.Errorf("%w 0x%02x", ErrUnknownType, uint8(t))
	}
	p := make([]byte, n-1)
	if _, err := io.ReadFull(r, p); err != nil {
		return Frame{}, unexpected(err)
	}
	return Frame{Type: t, Payload: p}, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteFrame writes one frame in a single Write call, so frames from concurrent
// writers guarded by one mutex never interleave.
func WriteFrame(w io.Writer, t Type, payload []byte) error {
	if len(payload)+1 > MaxFrame {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrFrameTooLarge, len(payload)+1, MaxFrame)
	}
	buf := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(buf[:4], uint32(len(payload)+1))
	buf[4] = byte(t)
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// WriteJSON marshals v and writes it as one frame of type t.
func WriteJSON(w io.Writer, t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", t, err)
	}
	return WriteFrame(w, t, b)
}

// Decode unmarshals a JSON control frame, refusing unknown fields so that a
// confused peer is noticed rather than half-understood.
func (f Frame) Decode(v any) error {
	if err := decodeStrict(f.Payload, v); err != nil {
		return fmt.Errorf("decode %s frame: %w", f.Type, err)
	}
	return nil
}

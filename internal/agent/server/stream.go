package server

import (
	"errors"
	"io"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// dataReader reads the client's TData frames as a byte stream; TDataEOF is
// io.EOF. Any other frame is a protocol error (bad-request).
type dataReader struct {
	w   *wire
	buf []byte
	eof bool
}

func (r *dataReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		f, err := proto.ReadFrame(r.w.conn)
		if err != nil {
			if errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrEmptyFrame) ||
				errors.Is(err, proto.ErrUnknownType) {
				return 0, proto.Errorf(proto.CodeBadRequest, "%v", err)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the client went away mid-stream
			}
			return 0, err
		}
		switch f.Type {
		case proto.TData:
			r.buf = f.Payload
		case proto.TDataEOF:
			r.eof = true
		default:
			return 0, proto.Errorf(proto.CodeBadRequest, "unexpected %s frame in a data stream", f.Type)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// dataWriter sends bytes as TData frames of at most MaxData.
type dataWriter struct{ w *wire }

func (d dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), proto.MaxData)
		if err := d.w.send(proto.TData, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CloseWrite sends TDataEOF.
func (d dataWriter) CloseWrite() error { return d.w.send(proto.TDataEOF, nil) }

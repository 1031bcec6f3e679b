package proto

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadFrame: any input either decodes to frames that re-encode to the
// same bytes, or fails with an error; never a panic or a huge allocation.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	_ = WriteJSON(&seed, THello, Hello{Version: 1, MinVersion: 1})
	_ = WriteFrame(&seed, TStdout, []byte("hello"))
	_ = WriteFrame(&seed, TStdinEOF, nil)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0, 0, 0, 1, 0x7e})
	f.Add([]byte{0, 0, 0, 9, 0x01, '{'})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var consumed int
		for {
			fr, err := ReadFrame(r)
			if err != nil {
				if errors.Is(err, io.EOF) && consumed != len(in) {
					t.Fatalf("clean EOF after %d of %d bytes", consumed, len(in))
				}
				return
			}
			if len(fr.Payload)+1 > MaxFrame || !fr.Type.Known() {
				t.Fatalf("accepted frame type %s with %d bytes", fr.Type, len(fr.Payload))
			}
			var out bytes.Buffer
			if err := WriteFrame(&out, fr.Type, fr.Payload); err != nil {
				t.Fatal(err)
			}
			n := len(in) - r.Len()
			if !bytes.Equal(out.Bytes(), in[consumed:n]) {
				t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[consumed:n])
			}
			consumed = n
		}
	})
}

package qmp

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzDecodeLine feeds arbitrary server output through the line reader and
// decoder: they must never panic and must classify consistently.
func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(greeting72 + "\r\n"))
	f.Add([]byte(`{"return": {"status": "running", "running": true}, "id": 3}` + "\r\n"))
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "x"}}` + "\r\n"))
	f.Add([]byte(`{"timestamp": {"seconds": -1, "microseconds": 99999999}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}` + "\n"))
	f.Add([]byte("\r\n\r\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16)
		for i := 0; i < 8; i++ {
			line, err := readLine(r, 4096)
			if err != nil {
				return
			}
			if len(line) > 4096 {
				t.Fatalf("readLine returned %d bytes over its limit", len(line))
			}
			m, err := decodeLine(line)
			if err != nil {
				continue
			}
			switch m.kind {
			case kindGreeting:
			case kindEvent:
				if m.event.Name == "" {
					t.Fatal("event without name")
				}
			case kindReply:
				if (m.err == nil) == (m.ret == nil) {
					t.Fatal("reply must carry exactly one of return/error")
				}
			default:
				t.Fatalf("unknown kind %d", m.kind)
			}
		}
	})
}

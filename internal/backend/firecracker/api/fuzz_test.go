package api

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeResponse feeds arbitrary status codes and bodies, as a broken
// or hostile VMM could send them, through the response decoder: it must
// never panic, must classify every non-2xx as *Error, and must keep fault
// text bounded and free of control characters (it reaches terminals).
func FuzzDecodeResponse(f *testing.F) {
	f.Add(204, []byte(""))
	f.Add(200, []byte(`{"app_name":"Firecracker","id":"x","state":"Running","vmm_version":"1.16.1"}`))
	f.Add(200, []byte(`{"firecracker_version":"1.16.1"}`))
	f.Add(400, []byte(`{"fault_message":"The requested operation is not supported after starting the microVM."}`))
	f.Add(400, []byte(`{"fault_message":""}`))
	f.Add(413, []byte("\x00\x01garbage"))
	f.Add(200, []byte(`[1,2`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		var info InstanceInfo
		err := decodeResponse("GET", "/", status, body, &info)
		if status < 200 || status >= 300 {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("status %d: err %v is no *Error", status, err)
			}
			if utf8.RuneCountInString(e.Fault) > 2001 || strings.ContainsAny(e.Fault, "\x00\x1b\n") {
				t.Fatalf("fault excerpt not bounded: %d runes", utf8.RuneCountInString(e.Fault))
			}
			_ = e.Error()
		}
		var v Version
		_ = decodeResponse("GET", "/version", status, body, &v)
		if err == nil && status >= 200 && status < 300 {
			_, _ = ParseVersion(v.FirecrackerVersion)
		}
	})
}

// FuzzParseVersion: any string in, no panic, and an accepted version
// prints back to something that parses to itself.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.16.1", "v1.14.0", "1.17.0-dev", "1.2", "", "1..2", "99999999999.1.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		w, err := ParseVersion(v.String())
		if err != nil || w != v {
			t.Fatalf("%q -> %v -> %v, %v", s, v, w, err)
		}
	})
}

package proto

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParsePostRestore(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{``, true},
		{`{}`, true},
		{`{"unix_nano":1700000000000000000,"hostname":"web-2","entropy":"AAEC"}`, true},
		{`{"hostname":"Web"}`, false},
		{`{"hostname":"-a"}`, false},
		{`{"hostname":"` + strings.Repeat("a", 64) + `"}`, false},
		{`{"unix_nano":-1}`, false},
		{`{"extra":1}`, false},
		{`{} {}`, false},
		{`{"entropy":"` + strings.Repeat("A", 8192) + `"}`, false},
	}
	for _, tt := range tests {
		if _, err := ParsePostRestore([]byte(tt.in)); (err == nil) != tt.ok {
			t.Errorf("ParsePostRestore(%.40q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

// FuzzParsePostRestore: no input panics, and whatever is accepted is valid
// and survives a round trip.
func FuzzParsePostRestore(f *testing.F) {
	f.Add([]byte(`{"unix_nano":1,"hostname":"a","entropy":"AA=="}`))
	f.Add([]byte(`{"hostname":"x-y"}`))
	f.Add([]byte(`{"entropy":null}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParsePostRestore(in)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted invalid request: %v", err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePostRestore(b); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

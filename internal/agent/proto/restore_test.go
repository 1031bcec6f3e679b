package proto

import (
	"encoding/json"
	"strings"
	"testing"
)

const testNetwork = `{"interfaces":[{"mac":"02:00:0a:58:00:06","address":"10.88.0.6/24","gateway":"10.88.0.1","mtu":1500}],` +
	`"dns":["10.88.0.1"],"search":["default"],"hosts":[{"ip":"10.88.0.6","names":["clone-1","clone-1.default"]}]}`

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
		{`{"network":` + testNetwork + `}`, true},
		{`{"network":{"interfaces":[]}}`, false},
		{`{"network":{"interfaces":[{"mac":"nope","address":"10.88.0.6/24"}]}}`, false},
		{`{"network":{"interfaces":[{"mac":"02:00:0a:58:00:06","address":"10.88.0.6/24"}],"bogus":1}}`, false},
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
	f.Add([]byte(`{"hostname":"clone-1","network":` + testNetwork + `}`))
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

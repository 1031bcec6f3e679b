package guestcfg

import (
	"bytes"
	"strings"
	"testing"
)

func valid() *Config {
	return &Config{Version: 1, Name: "web", Hostname: "web", Transport: Transport{Kind: TransportSerial, SerialName: SerialPortName}}
}

func TestRoundTrip(t *testing.T) {
	c := valid()
	c.Env = []string{"A=1"}
	c.Policy.Console = true
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "web" || !got.Policy.Console || got.Env[0] != "A=1" {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unknown field", `{"version":1,"hostname":"a","transport":{"kind":"vsock"},"extra":1}`, "unknown field"},
		{"bad version", `{"version":2,"hostname":"a","transport":{"kind":"vsock"}}`, "version"},
		{"bad hostname", `{"version":1,"hostname":"-a","transport":{"kind":"vsock"}}`, "hostname"},
		{"bad transport", `{"version":1,"hostname":"a","transport":{"kind":"carrier-pigeon"}}`, "transport"},
		{"trailing", `{"version":1,"hostname":"a","transport":{"kind":"vsock"}} {}`, "trailing"},
		{"not json", `hello`, "decode"},
		{"too big", `{"version":1,"name":"` + strings.Repeat("a", MaxSize) + `"}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := valid().Encode()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	withNet := valid()
	withNet.Network = validNetwork()
	b, _ = withNet.Encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Decode(bytes.NewReader(in))
		if err != nil {
			return
		}
		if c.Validate() != nil {
			t.Fatal("Decode accepted an invalid config")
		}
		if _, err := c.Encode(); err != nil {
			t.Fatalf("accepted config does not re-encode: %v", err)
		}
	})
}

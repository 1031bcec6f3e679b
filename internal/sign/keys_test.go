package sign

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

func TestPublicKeyFileRoundTrip(t *testing.T) {
	p := mustKey(t, "ci-2026").Public()
	text, err := p.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(text, []byte("mvm-ed25519-pub ")) || !bytes.HasSuffix(text, []byte(" ci-2026\n")) || bytes.Count(text, []byte("\n")) != 1 {
		t.Fatalf("file %q", text)
	}
	for _, in := range [][]byte{text, bytes.TrimSuffix(text, []byte("\n")), bytes.Replace(text, []byte("\n"), []byte("\r\n"), 1)} {
		got, err := ParsePublicKey(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got.ID != p.ID || got.Name != p.Name || !got.Key.Equal(p.Key) {
			t.Fatalf("got %+v want %+v", got, p)
		}
	}
	p.Name = ""
	text, _ = p.MarshalText()
	if got, err := ParsePublicKey(text); err != nil || got.Name != "" || got.ID != p.ID {
		t.Fatalf("unnamed: %+v %v", got, err)
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	raw := make([]byte, 32)
	b64 := base64.StdEncoding.EncodeToString(raw)
	tests := []struct{ name, in, msg string }{
		{"empty", "", "does not start with"},
		{"other format", "ssh-ed25519 " + b64 + " a", "does not start with"},
		{"no key", "mvm-ed25519-pub", "optional name"},
		{"too many fields", "mvm-ed25519-pub " + b64 + " a b", "optional name"},
		{"double space", "mvm-ed25519-pub  " + b64, "single spaces"},
		{"trailing space", "mvm-ed25519-pub " + b64 + " ", "single spaces"},
		{"two lines", "mvm-ed25519-pub " + b64 + " a\nmvm-ed25519-pub " + b64 + " b\n", "one line"},
		{"bad base64", "mvm-ed25519-pub " + b64[:10] + "*" + b64[11:], "not base64"},
		{"short key", "mvm-ed25519-pub " + base64.StdEncoding.EncodeToString(raw[:31]), "31 bytes"},
		{"long key", "mvm-ed25519-pub " + base64.StdEncoding.EncodeToString(append(raw, 0)), "33 bytes"},
		{"unpadded", "mvm-ed25519-pub " + strings.TrimRight(b64, "="), "base64"},
		{"control char name", "mvm-ed25519-pub " + b64 + " a\x1b[2J", "invalid name"},
		{"slash in name", "mvm-ed25519-pub " + b64 + " ../x", "invalid name"},
		{"huge", "mvm-ed25519-pub " + b64 + " " + strings.Repeat("a", 5000), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := ParsePublicKey([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %+v, %v; want error with %q", p, err, tt.msg)
			}
		})
	}
}

func TestPrivateKeyFile(t *testing.T) {
	k := mustKey(t, "a")
	b, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePrivateKey("a", b)
	if err != nil || !got.Key.Equal(k.Key) || got.Name != "a" {
		t.Fatalf("round trip: %v", err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rder, _ := x509.MarshalPKCS8PrivateKey(rk)
	bad := map[string][]byte{
		"no PEM":       []byte("hello"),
		"wrong type":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}),
		"rsa key":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rder}),
		"trailing":     append(append([]byte(nil), b...), "junk"...),
		"garbage DER":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x01}}),
		"with headers": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}),
	}
	for name, in := range bad {
		if _, err := ParsePrivateKey("x", in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewKeySetRecomputesIDs(t *testing.T) {
	p := mustKey(t, "a").Public()
	want := p.ID
	p.ID = "ed25519:0000000000000000"
	s := NewKeySet(p)
	if _, ok := s[want]; !ok || len(s) != 1 {
		t.Fatalf("set %v", s)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"default", "ci-2026", "a", "team.web_1"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Default", "../x", "a/b", ".hidden", "a..b", "a b", strings.Repeat("a", 65)} {
		if ValidateName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

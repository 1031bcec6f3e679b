package auth

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestKeyEncodingRoundTrip(t *testing.T) {
	priv, pub, err := NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ps, "ed25519-public:") || !strings.HasPrefix(ks, "ed25519-private:") {
		t.Fatalf("encodings %q, %q", ps, ks)
	}
	gotPub, err := ParsePublicKey(" " + ps + "\n")
	if err != nil || !gotPub.Equal(pub) {
		t.Fatalf("ParsePublicKey = %x, %v", gotPub, err)
	}
	gotPriv, err := ParsePrivateKey(ks + "\n")
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("ParsePrivateKey: %v", err)
	}
}

func TestKeyDecodingRejects(t *testing.T) {
	priv, pub, _ := NewGuestKey()
	ps, _ := MarshalPublicKey(pub)
	ks, _ := MarshalPrivateKey(priv)
	b64 := strings.TrimPrefix(ps, "ed25519-public:")
	tests := []struct {
		name, in string
		private  bool
		want     string
	}{
		{"private key given as public", ks, false, "wrong kind of key"},
		{"public key given as private", ps, true, "wrong kind of key"},
		{"no prefix", b64, false, "missing prefix"},
		{"empty", "", true, "missing prefix"},
		{"bad base64", "ed25519-public:!!!!", false, "invalid base64"},
		{"unpadded", "ed25519-public:" + strings.TrimRight(b64, "="), false, "invalid base64"},
		{"short", "ed25519-public:AAAA", false, "decoded 3 bytes"},
		{"long", "ed25519-private:" + b64 + "AAAA", true, "invalid base64"},
		{"inner space", "ed25519-public: " + b64, false, "invalid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.private {
				_, err = ParsePrivateKey(tt.in)
			} else {
				_, err = ParsePublicKey(tt.in)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.private && strings.Contains(err.Error(), strings.TrimPrefix(tt.in, "ed25519-private:")) && tt.in != "" {
				t.Fatalf("error echoes the secret input: %v", err)
			}
		})
	}
	if _, err := MarshalPublicKey(pub[:5]); err == nil {
		t.Error("MarshalPublicKey accepted a short key")
	}
	if _, err := MarshalPrivateKey(ed25519.PrivateKey(pub)); err == nil {
		t.Error("MarshalPrivateKey accepted a public key")
	}
}

func TestFingerprint(t *testing.T) {
	_, pub, _ := NewGuestKey()
	_, pub2, _ := NewGuestKey()
	fp := Fingerprint(pub)
	if !strings.HasPrefix(fp, "SHA256:") || len(fp) != len("SHA256:")+43 {
		t.Fatalf("Fingerprint = %q", fp)
	}
	if fp == Fingerprint(pub2) || fp != Fingerprint(append(ed25519.PublicKey(nil), pub...)) {
		t.Fatal("fingerprints are not a function of the key")
	}
}

package sign

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// Envelopes arrive from registries and buckets: decoding must never panic,
// and whatever it accepts must be well formed and re-encode to an envelope
// it accepts again.
func FuzzDecodeEnvelope(f *testing.F) {
	k, _ := GenerateKey("seed")
	good, _ := Sign(k, digestOf("m"))
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"version":1}`))
	f.Add([]byte(`[`))
	f.Add(bytes.Replace(good, []byte(`"signer"`), []byte(`"Signer"`), 1))
	trusted := NewKeySet(k.Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		id, verr := Verify(b, digestOf("m"), trusted)
		if err != nil {
			if verr == nil {
				t.Fatalf("Verify accepted what DecodeEnvelope refused: %v", err)
			}
			return
		}
		if verr == nil && (id != k.Public().ID || e.Digest != digestOf("m")) {
			t.Fatalf("verified %+v as %s", e, id)
		}
		if e.Version != EnvelopeVersion || e.Algorithm != Algorithm || !validKeyID(e.KeyID) || checkDigest(e.Digest) != nil {
			t.Fatalf("accepted %+v", e)
		}
		if sig, err := base64.StdEncoding.DecodeString(e.Signature); err != nil || len(sig) != 64 {
			t.Fatalf("accepted signature %q", e.Signature)
		}
		again, err := json.Marshal(e)
		if err != nil {
			return
		}
		if _, err := DecodeEnvelope(again); err != nil {
			t.Fatalf("accepted %q but not its re-encoding %q: %v", b, again, err)
		}
	})
}

// Public key files come from other people ('mvmctl key trust FILE').
func FuzzParsePublicKey(f *testing.F) {
	k, _ := GenerateKey("seed")
	text, _ := k.Public().MarshalText()
	f.Add(text)
	f.Add(bytes.TrimSuffix(text, []byte("\n")))
	f.Add([]byte("mvm-ed25519-pub"))
	f.Add([]byte("mvm-ed25519-pub AAAA x\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePublicKey(b)
		if err != nil {
			return
		}
		if len(p.Key) != 32 || p.ID != KeyID(p.Key) {
			t.Fatalf("accepted %+v", p)
		}
		out, err := p.MarshalText()
		if err != nil {
			t.Fatalf("accepted key does not re-encode: %v", err)
		}
		// One key, one spelling: what parses is what we would write.
		if in := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"); in+"\n" != string(out) {
			t.Fatalf("accepted %q, which re-encodes as %q", b, out)
		}
	})
}

// Private key files are local, but a corrupt one must fail cleanly.
func FuzzParsePrivateKey(f *testing.F) {
	k, _ := GenerateKey("seed")
	b, _ := k.MarshalPEM()
	f.Add(b)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParsePrivateKey("f", b); err == nil && len(p.Key) != 64 {
			t.Fatalf("accepted a %d-byte key", len(p.Key))
		}
	})
}

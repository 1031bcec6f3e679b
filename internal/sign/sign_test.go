package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mustKey(t testing.TB, name string) *PrivateKey {
	t.Helper()
	k, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSign(t testing.TB, k *PrivateKey, digest string) []byte {
	t.Helper()
	env, err := Sign(k, digest)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// edit rewrites one field of an envelope's JSON (nil value: delete it).
func edit(t *testing.T, env []byte, field string, value any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	if value == nil {
		delete(m, field)
	} else {
		m[field] = value
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerifyRoundTrip(t *testing.T) {
	pinned := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("x", 3600))
	now = func() time.Time { return pinned }
	t.Cleanup(func() { now = time.Now })

	k := mustKey(t, "alice")
	d := digestOf("manifest")
	env := mustSign(t, k, d)
	id, err := Verify(env, d, NewKeySet(k.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if id != k.Public().ID || !strings.HasPrefix(id, "ed25519:") || len(id) != len("ed25519:")+16 {
		t.Fatalf("key ID %q", id)
	}
	e, err := DecodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 1 || e.Algorithm != "ed25519" || e.Digest != d || e.Signer != "alice" || e.KeyID != id {
		t.Fatalf("envelope %+v", e)
	}
	if want := pinned.UTC().Truncate(time.Second); !e.Created.Equal(want) || e.Created.Location() != time.UTC {
		t.Fatalf("created %v, want %v", e.Created, want)
	}
	// The message is domain separated: the raw digest alone does not
	// verify under the envelope's signature.
	sig, _ := base64.StdEncoding.DecodeString(e.Signature)
	if bytes.Equal(signedMessage(d), []byte(d)) || !bytes.HasPrefix(signedMessage(d), []byte(signedPrefix)) {
		t.Fatal("signed message is not prefixed")
	}
	if ed25519.Verify(k.Public().Key, []byte(d), sig) {
		t.Fatal("signature verifies over the bare digest")
	}
}

func TestKeyIDStable(t *testing.T) {
	k := mustKey(t, "a")
	p := k.Public()
	if KeyID(p.Key) != p.ID || KeyID(p.Key) != KeyID(append([]byte(nil), p.Key...)) {
		t.Fatal("key ID not a function of the key")
	}
	if KeyID(mustKey(t, "a").Public().Key) == p.ID {
		t.Fatal("two keys, one ID")
	}
}

func TestVerifyFailures(t *testing.T) {
	alice, bob := mustKey(t, "alice"), mustKey(t, "bob")
	d := digestOf("manifest")
	other := digestOf("other manifest")
	env := mustSign(t, alice, d)
	trusted := NewKeySet(alice.Public(), bob.Public())
	e, _ := DecodeEnvelope(env)
	sig, _ := base64.StdEncoding.DecodeString(e.Signature)
	flipped := append([]byte(nil), sig...)
	flipped[10] ^= 0x01

	tests := []struct {
		name    string
		env     []byte
		digest  string
		trusted KeySet
		want    error
		msg     string
	}{
		{"changed digest", env, other, trusted, ErrDigestMismatch, "signs " + d},
		{"digest field rewritten to match", edit(t, env, "digest", other), other, trusted, ErrBadSignature, alice.Public().ID},
		{"signature byte changed", edit(t, env, "signature", base64.StdEncoding.EncodeToString(flipped)), d, trusted, ErrBadSignature, "altered"},
		{"other trusted key's ID", edit(t, env, "key_id", bob.Public().ID), d, trusted, ErrBadSignature, bob.Public().ID},
		{"signed by another key", mustSign(t, bob, d), d, NewKeySet(alice.Public()), ErrUnknownKey, "mvmctl key trust"},
		{"no trusted keys", env, d, nil, ErrUnknownKey, `("alice")`},
		{"key filed under wrong ID", env, d, KeySet{alice.Public().ID: bob.Public()}, ErrUnknownKey, alice.Public().ID},
		{"truncated", env[:len(env)/2], d, trusted, ErrMalformed, "truncated"},
		{"truncated to nothing", nil, d, trusted, ErrMalformed, "truncated"},
		{"not an object", []byte(`[1]`), d, trusted, ErrMalformed, "not a JSON object"},
		{"unknown field", edit(t, env, "comment", "hi"), d, trusted, ErrMalformed, `unknown field "comment"`},
		{"field in other case", bytes.Replace(env, []byte(`"key_id"`), []byte(`"KEY_ID"`), 1), d, trusted, ErrMalformed, `unknown field "KEY_ID"`},
		{"duplicate field", bytes.Replace(env, []byte(`{`), []byte(`{"digest":"`+other+`",`), 1), d, trusted, ErrMalformed, "twice"},
		{"missing field", edit(t, env, "created", nil), d, trusted, ErrMalformed, `missing field "created"`},
		{"trailing data", append(append([]byte(nil), env...), []byte(" {}")...), d, trusted, ErrMalformed, "after the envelope"},
		{"wrong version", edit(t, env, "version", 2), d, trusted, ErrUnsupportedVersion, "upgrade"},
		{"wrong algorithm", edit(t, env, "algorithm", "rsa"), d, trusted, ErrUnsupportedAlgorithm, `"rsa"`},
		{"wrong type", edit(t, env, "version", "1"), d, trusted, ErrMalformed, "version"},
		{"bad base64", edit(t, env, "signature", "!!!"+e.Signature[3:]), d, trusted, ErrMalformed, "base64"},
		{"non-canonical base64", edit(t, env, "signature", strings.TrimRight(e.Signature, "=")), d, trusted, ErrMalformed, "base64"},
		{"short signature", edit(t, env, "signature", base64.StdEncoding.EncodeToString(sig[:63])), d, trusted, ErrMalformed, "63 bytes"},
		{"long signature", edit(t, env, "signature", base64.StdEncoding.EncodeToString(append(sig, 0))), d, trusted, ErrMalformed, "65 bytes"},
		{"bad key ID", edit(t, env, "key_id", "ed25519:XYZ"), d, trusted, ErrMalformed, "key_id"},
		{"bad digest field", edit(t, env, "digest", "sha256:abc"), d, trusted, ErrMalformed, "64 hex"},
		{"bad signer", edit(t, env, "signer", "a b"), d, trusted, ErrMalformed, "signer"},
		{"zero created", edit(t, env, "created", "0001-01-01T00:00:00Z"), d, trusted, ErrMalformed, "created"},
	}
	sentinels := []error{ErrMalformed, ErrUnsupportedVersion, ErrUnsupportedAlgorithm, ErrDigestMismatch, ErrUnknownKey, ErrBadSignature, ErrUnsigned}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Verify(tt.env, tt.digest, tt.trusted)
			if err == nil {
				t.Fatalf("verified as %s", id)
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.want, tt.msg)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("%v also matches %v", err, s)
				}
			}
		})
	}
}

func TestSignAndVerifyRefuseBadDigests(t *testing.T) {
	k := mustKey(t, "a")
	for _, d := range []string{"", "sha256:", "sha512:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63), strings.Repeat("a", 64)} {
		if _, err := Sign(k, d); err == nil {
			t.Errorf("Sign(%q) succeeded", d)
		}
		if _, err := Verify(mustSign(t, k, digestOf("x")), d, NewKeySet(k.Public())); err == nil {
			t.Errorf("Verify(%q) succeeded", d)
		}
	}
	if _, err := Sign(nil, digestOf("x")); err == nil {
		t.Error("Sign with no key succeeded")
	}
}

func TestVerifyAnyAndCheck(t *testing.T) {
	alice, mallory := mustKey(t, "alice"), mustKey(t, "mallory")
	d := digestOf("m")
	trusted := NewKeySet(alice.Public())
	good := mustSign(t, alice, d)
	untrusted := mustSign(t, mallory, d)
	bad := mustSign(t, alice, digestOf("n"))
	e, _ := DecodeEnvelope(good)
	sig, _ := base64.StdEncoding.DecodeString(e.Signature)
	sig[0] ^= 0x80
	tampered := edit(t, good, "signature", base64.StdEncoding.EncodeToString(sig))

	if id, err := VerifyAny([][]byte{untrusted, bad, good}, d, trusted); err != nil || id != alice.Public().ID {
		t.Fatalf("one good of three: %q %v", id, err)
	}
	if _, err := VerifyAny(nil, d, trusted); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("no envelopes: %v", err)
	}
	if _, err := VerifyAny([][]byte{untrusted, tampered, []byte("{")}, d, trusted); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "none of 3") {
		t.Fatalf("all bad: %v, want the bad signature reported", err)
	}

	tests := []struct {
		name     string
		required bool
		envs     [][]byte
		wantID   bool
		warn     error
		err      error
	}{
		{"verified", true, [][]byte{good}, true, nil, nil},
		{"unsigned, required", true, nil, false, nil, ErrUnsigned},
		{"unsigned, optional", false, nil, false, ErrUnsigned, nil},
		{"untrusted, required", true, [][]byte{untrusted}, false, nil, ErrUnknownKey},
		{"untrusted, optional", false, [][]byte{untrusted}, false, ErrUnknownKey, nil},
		{"malformed, optional", false, [][]byte{[]byte("x")}, false, ErrMalformed, nil},
		{"tampered, optional", false, [][]byte{tampered}, false, nil, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, warn, err := Check(tt.required, tt.envs, d, trusted)
			if (id != "") != tt.wantID || !errIs(warn, tt.warn) || !errIs(err, tt.err) {
				t.Fatalf("got %q, warn %v, err %v", id, warn, err)
			}
		})
	}
	if _, _, err := Check(true, nil, d, trusted); !strings.Contains(err.Error(), "[trust]") {
		t.Errorf("required-but-unsigned error does not point at the policy: %v", err)
	}
}

func errIs(got, want error) bool {
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

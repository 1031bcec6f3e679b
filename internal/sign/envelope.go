package sign

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// EnvelopeVersion is the envelope format Sign writes and Verify accepts.
const EnvelopeVersion = 1

// signedPrefix separates our signatures from every other use of an Ed25519
// key: what is signed is this prefix followed by the manifest digest, so a
// signature made here can never be replayed as, say, an agent handshake
// or a signature over some other protocol's 71-byte string.
const signedPrefix = "mvm template manifest signature v1\x00"

// maxEnvelope bounds what Verify reads; a real envelope is about 300 bytes.
const maxEnvelope = 16 << 10

// Envelope is the signature blob stored beside a template manifest
// (registry.SignatureMediaType). Only Digest is covered by the signature;
// Created and Signer are hints for people, to be shown, not trusted.
type Envelope struct {
	Version   int       `json:"version"`
	Algorithm string    `json:"algorithm"`
	KeyID     string    `json:"key_id"`
	Digest    string    `json:"digest"`    // the manifest's, "sha256:<hex>"
	Signature string    `json:"signature"` // standard base64, 64 bytes
	Created   time.Time `json:"created"`
	Signer    string    `json:"signer,omitempty"` // the key's name
}

// envelopeFields are the names DecodeEnvelope accepts, and whether each
// is required.
var envelopeFields = map[string]bool{
	"version": true, "algorithm": true, "key_id": true, "digest": true,
	"signature": true, "created": true, "signer": false,
}

// now is the clock of Sign (tests pin it).
var now = time.Now

func signedMessage(digest string) []byte {
	return []byte(signedPrefix + digest)
}

// Sign signs a manifest digest ("sha256:<64 hex>") with key and returns the
// envelope's JSON.
func Sign(key *PrivateKey, manifestDigest string) ([]byte, error) {
	if key == nil || len(key.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("sign: no usable private key")
	}
	if err := checkDigest(manifestDigest); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if key.Name != "" && !keyNameRE.MatchString(key.Name) {
		return nil, fmt.Errorf("sign: key name %q cannot go in an envelope", key.Name)
	}
	e := Envelope{
		Version:   EnvelopeVersion,
		Algorithm: Algorithm,
		KeyID:     key.Public().ID,
		Digest:    manifestDigest,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key.Key, signedMessage(manifestDigest))),
		Created:   now().UTC().Truncate(time.Second),
		Signer:    key.Name,
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return b, nil
}

// DecodeEnvelope parses envelope JSON strictly: one object, each known
// field once and spelled exactly (encoding/json alone would take "KEY_ID"
// and the last of two "digest"s), every required field present, nothing
// after it. It checks shapes, not the signature: see Verify.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if len(b) > maxEnvelope {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(b), maxEnvelope)
	}
	if err := checkFields(b); err != nil {
		return nil, err
	}
	var e Envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if e.Version != EnvelopeVersion {
		return nil, fmt.Errorf("%w: %d (this mvmctl reads version %d; upgrade it)", ErrUnsupportedVersion, e.Version, EnvelopeVersion)
	}
	if e.Algorithm != Algorithm {
		return nil, fmt.Errorf("%w: %q (want %q)", ErrUnsupportedAlgorithm, e.Algorithm, Algorithm)
	}
	if !validKeyID(e.KeyID) {
		return nil, fmt.Errorf("%w: key_id %q is not \"ed25519:\" and 16 hex digits", ErrMalformed, e.KeyID)
	}
	if err := checkDigest(e.Digest); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(e.Signature)
	if err != nil || base64.StdEncoding.EncodeToString(sig) != e.Signature {
		return nil, fmt.Errorf("%w: signature is not canonical base64", ErrMalformed)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want %d", ErrMalformed, len(sig), ed25519.SignatureSize)
	}
	if e.Created.IsZero() {
		return nil, fmt.Errorf("%w: created is zero", ErrMalformed)
	}
	if e.Signer != "" && !keyNameRE.MatchString(e.Signer) {
		return nil, fmt.Errorf("%w: invalid signer name %q", ErrMalformed, e.Signer)
	}
	return &e, nil
}

// checkFields walks the top-level object's keys: exact names, no repeats,
// all required ones present, a single JSON value in b.
func checkFields(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, truncated(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, truncated(err))
		}
		name, _ := tok.(string) // object keys are always strings
		if _, known := envelopeFields[name]; !known {
			return fmt.Errorf("%w: unknown field %q", ErrMalformed, name)
		}
		if seen[name] {
			return fmt.Errorf("%w: field %q appears twice", ErrMalformed, name)
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%w: field %q: %v", ErrMalformed, name, truncated(err))
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, truncated(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the envelope", ErrMalformed)
	}
	for name, required := range envelopeFields {
		if required && !seen[name] {
			return fmt.Errorf("%w: missing field %q", ErrMalformed, name)
		}
	}
	return nil
}

// truncated names the usual cause of an unexpected end of input.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("truncated")
	}
	return err
}

// checkDigest accepts "sha256:" and 64 lower-case hex digits, the only
// spelling of a manifest digest we sign, so that one manifest has exactly
// one signed message.
func checkDigest(d string) error {
	const p = "sha256:"
	if len(d) != len(p)+64 || d[:len(p)] != p {
		return fmt.Errorf("digest %q is not \"sha256:\" and 64 hex digits", d)
	}
	for _, c := range d[len(p):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("digest %q is not \"sha256:\" and 64 lower-case hex digits", d)
		}
	}
	return nil
}

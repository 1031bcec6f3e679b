package sign

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
)

// trustHint tells the user the way out of ErrUnknownKey.
const trustHint = "if you trust its owner, get their public key file ('mvmctl key export' on their side), compare its ID with them, and run 'mvmctl key trust FILE'"

// Verify checks one envelope against the manifest digest the caller
// computed from the bytes it pulled, using only trusted keys. It returns
// the ID of the key that signed. The checks run in a fixed order, so each
// failure has one cause: shape (ErrMalformed, ErrUnsupportedVersion,
// ErrUnsupportedAlgorithm), then ErrDigestMismatch, ErrUnknownKey and
// ErrBadSignature.
func Verify(envelope []byte, manifestDigest string, trusted KeySet) (string, error) {
	if err := checkDigest(manifestDigest); err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	e, err := DecodeEnvelope(envelope)
	if err != nil {
		return "", err
	}
	if e.Digest != manifestDigest {
		return "", fmt.Errorf("%w: it signs %s, the manifest is %s", ErrDigestMismatch, e.Digest, manifestDigest)
	}
	pub, ok := trusted[e.KeyID]
	// A KeySet built by hand might hold a key under the wrong ID; only a
	// key whose fingerprint is the ID may answer for it.
	if !ok || len(pub.Key) != ed25519.PublicKeySize || KeyID(pub.Key) != e.KeyID {
		signer := ""
		if e.Signer != "" {
			signer = fmt.Sprintf(" (%q)", e.Signer)
		}
		return "", fmt.Errorf("%w: %s%s; %s", ErrUnknownKey, e.KeyID, signer, trustHint)
	}
	sig, _ := base64.StdEncoding.DecodeString(e.Signature) // DecodeEnvelope checked it
	if !ed25519.Verify(pub.Key, signedMessage(manifestDigest), sig) {
		return "", fmt.Errorf("%w: key %s: the template or its signature was altered after signing", ErrBadSignature, e.KeyID)
	}
	return e.KeyID, nil
}

// VerifyAny accepts a manifest when at least one of its envelopes verifies
// (a template may be signed by several keys, not all trusted here). With
// none it returns ErrUnsigned; when all fail, the error of the most telling
// one: a trusted key's bad signature first, an untrusted key last.
func VerifyAny(envelopes [][]byte, manifestDigest string, trusted KeySet) (string, error) {
	if len(envelopes) == 0 {
		return "", ErrUnsigned
	}
	var worst error
	rank := -1
	for _, env := range envelopes {
		id, err := Verify(env, manifestDigest, trusted)
		if err == nil {
			return id, nil
		}
		if r := severity(err); r > rank {
			worst, rank = err, r
		}
	}
	if len(envelopes) > 1 {
		return "", fmt.Errorf("none of %d signatures verifies: %w", len(envelopes), worst)
	}
	return "", worst
}

// severity orders failures by how much they say about tampering.
func severity(err error) int {
	switch {
	case errors.Is(err, ErrBadSignature):
		return 5
	case errors.Is(err, ErrDigestMismatch):
		return 4
	case errors.Is(err, ErrMalformed):
		return 3
	case errors.Is(err, ErrUnsupportedVersion), errors.Is(err, ErrUnsupportedAlgorithm):
		return 2
	case errors.Is(err, ErrUnknownKey):
		return 1
	}
	return 0
}

// Check applies the trust policy to a pulled manifest's envelopes.
// required is config.TrustPolicy.Requires(store address).
//
// When a trusted key's signature verifies it returns that key's ID. When
// none does and signatures are required, err says why (wrapping ErrUnsigned,
// ErrUnknownKey, ...) and the pull must stop. When they are not required,
// the pull goes on and warn says why nothing verified, for the caller to
// print; the one exception is ErrBadSignature, which is an error either
// way: a key the user trusts signed something else than what arrived.
func Check(required bool, envelopes [][]byte, manifestDigest string, trusted KeySet) (keyID string, warn, err error) {
	id, verr := VerifyAny(envelopes, manifestDigest, trusted)
	switch {
	case verr == nil:
		return id, nil, nil
	case required:
		if errors.Is(verr, ErrUnsigned) {
			verr = fmt.Errorf("%w, and the trust policy requires a signature for this store (push it again with a signing key, see 'mvmctl key generate', or change [trust] in config.toml)", verr)
		}
		return "", nil, verr
	case errors.Is(verr, ErrBadSignature):
		return "", nil, verr
	}
	return "", verr, nil
}

package sign

import "errors"

// Errors callers tell apart to say what the user should do next. Every error
// from Verify, VerifyAny and Check wraps exactly one of them.
var (
	// ErrUnsigned: the template carries no signature at all.
	ErrUnsigned = errors.New("template is not signed")
	// ErrMalformed: the envelope is not one we could have written (bad
	// JSON, unknown or missing fields, bad base64, wrong lengths).
	ErrMalformed = errors.New("malformed signature envelope")
	// ErrUnsupportedVersion: an envelope version this build does not know.
	ErrUnsupportedVersion = errors.New("unsupported signature envelope version")
	// ErrUnsupportedAlgorithm: an algorithm other than ed25519.
	ErrUnsupportedAlgorithm = errors.New("unsupported signature algorithm")
	// ErrDigestMismatch: the envelope signs another manifest.
	ErrDigestMismatch = errors.New("signature is for another manifest")
	// ErrUnknownKey: signed by a key this host does not trust.
	ErrUnknownKey = errors.New("signed by a key that is not trusted")
	// ErrBadSignature: a trusted key's signature does not verify, i.e. the
	// manifest or the envelope was altered.
	ErrBadSignature = errors.New("signature does not verify")
)

// Errors of the key store.
var (
	// ErrKeyExists: generate refuses to replace a key.
	ErrKeyExists = errors.New("key already exists")
	// ErrNoKey: no private key of that name.
	ErrNoKey = errors.New("no such key")
	// ErrNotTrusted: untrust of an ID that is not trusted.
	ErrNotTrusted = errors.New("key is not trusted")
)

// Package sign signs template manifests and verifies them against the keys
// a user trusts.
//
// A push signs the manifest's digest with an Ed25519 key and stores the
// JSON Envelope as a blob of registry.SignatureMediaType; a pull recomputes
// the digest of the manifest it fetched and calls Check (or Verify) with
// the trusted keys and the config's trust policy. Keys live under the
// config root: own keys in keys/NAME.key (PEM PKCS#8, 0600) and
// keys/NAME.pub, keys trusted for verifying in trusted-keys/*.pub, all
// managed by Keyring. The formats and the policy are described for users
// in docs/signing.md.
//
// What is signed is a fixed domain prefix followed by the digest, never
// the digest alone, so these signatures cannot be confused with any other
// use of the same key.
package sign

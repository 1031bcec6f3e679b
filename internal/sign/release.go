package sign

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Release signatures: `make release` signs its SHA256SUMS file and an
// updater checks it against a pinned key. What is signed is a domain prefix
// of its own followed by the file's digest, so a release signature and a
// template signature (signedPrefix) can never stand in for each other, even
// made with the same key.
const releasePrefix = "mvm release checksums signature v1\x00"

// releaseMagic starts the only line of a release signature file:
// "mvm-release-sig-v1 ed25519:<16 hex> <base64 of 64 bytes>". It has no
// time stamp, so one key over one SHA256SUMS always gives the same bytes
// (Ed25519 is deterministic) and the whole release stays reproducible.
const releaseMagic = "mvm-release-sig-v1"

// ErrReleaseSignature: a release signature file is malformed, made by a
// key not trusted, or does not verify over the checksums.
var ErrReleaseSignature = errors.New("release signature")

func releaseMessage(sums []byte) []byte {
	d := sha256.Sum256(sums)
	return []byte(releasePrefix + "sha256:" + hex.EncodeToString(d[:]))
}

// SignRelease signs the bytes of a SHA256SUMS file and returns the
// signature file's contents.
func SignRelease(key *PrivateKey, sums []byte) ([]byte, error) {
	if key == nil || len(key.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("sign release: no usable private key")
	}
	sig := ed25519.Sign(key.Key, releaseMessage(sums))
	return []byte(releaseMagic + " " + key.Public().ID + " " + base64.StdEncoding.EncodeToString(sig) + "\n"), nil
}

// VerifyRelease checks a signature file over sums with the trusted keys and
// returns the signing key's ID. Parsing is strict: the file comes from a
// download.
func VerifyRelease(sigFile, sums []byte, trusted KeySet) (string, error) {
	if len(sigFile) > maxKeyFile {
		return "", fmt.Errorf("%w: %d bytes is too long for one", ErrReleaseSignature, len(sigFile))
	}
	line, ok := strings.CutSuffix(string(sigFile), "\n")
	if !ok || strings.ContainsAny(line, "\r\n") {
		return "", fmt.Errorf("%w: want exactly one line ending in a newline", ErrReleaseSignature)
	}
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != releaseMagic {
		return "", fmt.Errorf("%w: want %q, a key ID and a signature separated by single spaces", ErrReleaseSignature, releaseMagic)
	}
	id := f[1]
	if !validKeyID(id) {
		return "", fmt.Errorf("%w: key ID %q is not \"ed25519:\" and 16 hex digits", ErrReleaseSignature, id)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(f[2])
	if err != nil || len(sig) != ed25519.SignatureSize || base64.StdEncoding.EncodeToString(sig) != f[2] {
		return "", fmt.Errorf("%w: signature is not canonical base64 of %d bytes", ErrReleaseSignature, ed25519.SignatureSize)
	}
	pub, ok := trusted[id]
	if !ok || len(pub.Key) != ed25519.PublicKeySize || KeyID(pub.Key) != id {
		return "", fmt.Errorf("%w: signed by %s, which is not the trusted release key", ErrReleaseSignature, id)
	}
	if !ed25519.Verify(pub.Key, releaseMessage(sums), sig) {
		return "", fmt.Errorf("%w: key %s: the checksums or the signature were altered", ErrReleaseSignature, id)
	}
	return id, nil
}

package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Text prefixes of the encodings used in JSON (config drive, VM record). A
// public key and a private seed are both 32 bytes; the prefix makes swapping
// them a parse error instead of a silent wrong identity.
const (
	publicPrefix  = "ed25519-public:"
	privatePrefix = "ed25519-private:"
)

// NewGuestKey makes a fresh key pair for one VM.
func NewGuestKey() (ed25519.PrivateKey, ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate guest key: %w", err)
	}
	return priv, pub, nil
}

// MarshalPublicKey renders pub as "ed25519-public:<base64 of 32 bytes>".
func MarshalPublicKey(pub ed25519.PublicKey) (string, error) {
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("ed25519 public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	return publicPrefix + base64.StdEncoding.EncodeToString(pub), nil
}

// ParsePublicKey is the inverse of MarshalPublicKey. Surrounding white space
// is ignored; anything else that is not exactly one key is an error.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := decodePrefixed(s, publicPrefix, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("parse ed25519 public key: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

// MarshalPrivateKey renders priv as "ed25519-private:<base64 of the 32-byte
// seed>". The result is a secret: it belongs on the VM's own config drive
// and nowhere else.
func MarshalPrivateKey(priv ed25519.PrivateKey) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("ed25519 private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return privatePrefix + base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// ParsePrivateKey is the inverse of MarshalPrivateKey.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	b, err := decodePrefixed(s, privatePrefix, ed25519.SeedSize)
	if err != nil {
		// Never echo the input: it may be a key.
		return nil, fmt.Errorf("parse ed25519 private key: %w", err)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

func decodePrefixed(s, prefix string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		if strings.HasPrefix(s, publicPrefix) || strings.HasPrefix(s, privatePrefix) {
			return nil, fmt.Errorf("wrong kind of key: want prefix %q", prefix)
		}
		return nil, fmt.Errorf("missing prefix %q", prefix)
	}
	// The decoder skips \r and \n even in strict mode; one key has one text.
	if strings.ContainsAny(rest, " \t\r\n") {
		return nil, errors.New("invalid base64: white space inside the key")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, errors.New("invalid base64")
	}
	if len(b) != size {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(b), size)
	}
	return b, nil
}

// Fingerprint names a public key for humans and logs, like OpenSSH:
// "SHA256:" + unpadded base64 of the SHA-256 of the raw key.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// samePublicKey compares in constant time; lengths are public.
func samePublicKey(a, b ed25519.PublicKey) bool {
	return len(a) == ed25519.PublicKeySize && subtle.ConstantTimeCompare(a, b) == 1
}

func checkPrivateKey(priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("ed25519 private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return nil
}

func checkPublicKeys(pubs []ed25519.PublicKey) error {
	if len(pubs) == 0 {
		return errors.New("no pinned peer key")
	}
	for i, p := range pubs {
		if len(p) != ed25519.PublicKeySize {
			return fmt.Errorf("pinned key %d has %d bytes, want %d", i, len(p), ed25519.PublicKeySize)
		}
	}
	return nil
}

package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Algorithm is the only signature algorithm there is for now.
const Algorithm = "ed25519"

const (
	// publicMagic starts a public key file's only line; a version bump
	// would be a new word, not a new field.
	publicMagic = "mvm-ed25519-pub"
	keyIDPrefix = Algorithm + ":"
	pemType     = "PRIVATE KEY" // PKCS#8
	// maxKeyFile bounds what we read from a key file or stdin; real ones
	// are under 200 bytes.
	maxKeyFile = 4 << 10
)

// keyNameRE is what a key's name may be. It is a file name for own keys
// and a label in public key files; no spaces (the file is space separated),
// no slashes, nothing a terminal would interpret.
var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$`)

// ownNameRE is stricter: own key names become file names and CLI args.
var ownNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateName checks the name of an own key ("default", "ci-2026").
func ValidateName(name string) error {
	if !ownNameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("invalid key name %q: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// PublicKey is a verifying key with its ID and the name its owner gave it.
// The name is a label for people; only ID and Key are trusted.
type PublicKey struct {
	ID   string
	Name string
	Key  ed25519.PublicKey
}

// PrivateKey is a signing key and its name (the file it lives in).
type PrivateKey struct {
	Name string
	Key  ed25519.PrivateKey
}

// KeyID is the fingerprint by which envelopes name their key:
// "ed25519:" and the first 16 hex digits of SHA-256 of the raw key. 64
// bits are plenty for naming: a collision only makes verification fail,
// because the trusted key's own bytes are what check the signature.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return keyIDPrefix + hex.EncodeToString(sum[:8])
}

// validKeyID reports whether s has KeyID's shape (before any lookup).
func validKeyID(s string) bool {
	h, ok := strings.CutPrefix(s, keyIDPrefix)
	if !ok || len(h) != 16 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// GenerateKey makes a new signing key named name.
func GenerateKey(name string) (*PrivateKey, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &PrivateKey{Name: name, Key: priv}, nil
}

// Public is k's verifying half.
func (k *PrivateKey) Public() PublicKey {
	pub := k.Key.Public().(ed25519.PublicKey)
	return PublicKey{ID: KeyID(pub), Name: k.Name, Key: pub}
}

// MarshalText renders the public key file: one line,
// "mvm-ed25519-pub <base64 of the 32-byte key> <name>".
func (p PublicKey) MarshalText() ([]byte, error) {
	if len(p.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, want %d", len(p.Key), ed25519.PublicKeySize)
	}
	line := publicMagic + " " + base64.StdEncoding.EncodeToString(p.Key)
	if p.Name != "" {
		if !keyNameRE.MatchString(p.Name) {
			return nil, fmt.Errorf("key name %q cannot go in a public key file", p.Name)
		}
		line += " " + p.Name
	}
	return []byte(line + "\n"), nil
}

// ParsePublicKey reads a public key file. It is strict, since the bytes
// come from other people: exactly one line (a final "\n" or "\r\n" is
// allowed), single spaces, canonical base64 of exactly 32 bytes, and a name
// limited to letters, digits and ._@+-.
func ParsePublicKey(b []byte) (PublicKey, error) {
	if len(b) > maxKeyFile {
		return PublicKey{}, fmt.Errorf("public key file: %d bytes is too long for one", len(b))
	}
	s := string(b)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	if strings.ContainsAny(s, "\r\n") {
		return PublicKey{}, errors.New("public key file: want exactly one line")
	}
	f := strings.Split(s, " ")
	if f[0] != publicMagic {
		return PublicKey{}, fmt.Errorf("public key file: does not start with %q (export one with 'mvmctl key export')", publicMagic)
	}
	if len(f) < 2 || len(f) > 3 || slices.Contains(f, "") {
		return PublicKey{}, fmt.Errorf("public key file: want %q, a key and an optional name separated by single spaces", publicMagic)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(f[1])
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key file: key is not base64: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("public key file: key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	// The decoder skips line breaks (already refused above); comparing the
	// re-encoding keeps it that way: one key, one spelling.
	if base64.StdEncoding.EncodeToString(raw) != f[1] {
		return PublicKey{}, errors.New("public key file: key is not canonical base64")
	}
	p := PublicKey{ID: KeyID(raw), Key: ed25519.PublicKey(raw)}
	if len(f) == 3 {
		if !keyNameRE.MatchString(f[2]) {
			return PublicKey{}, fmt.Errorf("public key file: invalid name %q (letters, digits and ._@+- only, at most 64)", f[2])
		}
		p.Name = f[2]
	}
	return p, nil
}

// MarshalPEM renders the private key file (PEM, PKCS#8).
func (k *PrivateKey) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// ParsePrivateKey reads a private key file: one PEM "PRIVATE KEY" block
// (PKCS#8) holding an Ed25519 key, nothing but whitespace around it.
func ParsePrivateKey(name string, b []byte) (*PrivateKey, error) {
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("private key %s: file too long", name)
	}
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("private key %s: no PEM block", name)
	}
	if blk.Type != pemType || len(blk.Headers) != 0 {
		return nil, fmt.Errorf("private key %s: PEM block %q, want %q without headers", name, blk.Type, pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("private key %s: data after the PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", name, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s: %T, want an Ed25519 key", name, k)
	}
	return &PrivateKey{Name: name, Key: priv}, nil
}

// KeySet is the keys a verifier trusts, by ID.
type KeySet map[string]PublicKey

// NewKeySet indexes keys by their ID (recomputed, not taken on faith).
func NewKeySet(keys ...PublicKey) KeySet {
	s := make(KeySet, len(keys))
	for _, k := range keys {
		k.ID = KeyID(k.Key)
		s[k.ID] = k
	}
	return s
}

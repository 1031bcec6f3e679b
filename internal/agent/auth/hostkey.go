package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// HostKeyDir and HostKeyFile place the host key under the config root.
const (
	HostKeyDir  = "agent"
	HostKeyFile = "host_ed25519"
)

const (
	pemType        = "PRIVATE KEY" // PKCS#8
	maxHostKeySize = 64 << 10
)

// HostKeyPath is where LoadOrCreateHostKey keeps the key of configDir.
func HostKeyPath(configDir string) string {
	return filepath.Join(configDir, HostKeyDir, HostKeyFile)
}

// LoadOrCreateHostKey returns the user's host key, creating it on first use
// (PEM PKCS#8, mode 0600, in a 0700 directory). Creation is atomic and
// exclusive: the key is written to a temporary file and hard-linked into
// place, so concurrent callers (goroutines or processes) all end up with the
// one key that won, and nobody ever reads a half-written file. A key file
// that group or others may access is refused, not repaired.
func LoadOrCreateHostKey(configDir string) (ed25519.PrivateKey, error) {
	if configDir == "" {
		return nil, errors.New("host key: empty config directory")
	}
	dir := filepath.Join(configDir, HostKeyDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("host key: create %s: %w", dir, err)
	}
	if err := checkKeyDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, HostKeyFile)
	key, err := readHostKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createHostKey(dir, path); err != nil {
		return nil, err
	}
	return readHostKey(path)
}

// checkKeyDir refuses a directory others can write: they could swap the key.
func checkKeyDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("host key: %s is not a directory", dir)
	}
	if m := st.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("host key: directory %s is writable by other users (mode %#o): run chmod 700 %s", dir, m, dir)
	}
	return nil
}

func readHostKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("host key: %s is not a regular file", path)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("host key: %s is accessible by other users (mode %#o); refusing to use it: run chmod 600 %s", path, m, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxHostKeySize+1))
	if err != nil {
		return nil, fmt.Errorf("host key: read %s: %w", path, err)
	}
	if len(b) > maxHostKeySize {
		return nil, fmt.Errorf("host key: %s is larger than %d bytes", path, maxHostKeySize)
	}
	key, err := decodeHostKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("host key: %s: %w", path, err)
	}
	return key, nil
}

// decodeHostKeyPEM accepts exactly one PKCS#8 Ed25519 key block.
func decodeHostKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if blk.Type != pemType {
		return nil, fmt.Errorf("PEM block is %q, want %q", blk.Type, pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ed25519", k)
	}
	return key, nil
}

func encodeHostKeyPEM(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// createHostKey links a fully written key into place. Losing the race to
// another creator is success: the caller reads the winner's key.
func createHostKey(dir, path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("host key: generate: %w", err)
	}
	b, err := encodeHostKeyPEM(key)
	if err != nil {
		return fmt.Errorf("host key: encode: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".host_ed25519-*") // mode 0600
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("host key: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("host key: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("host key: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	// link(2), unlike rename(2), never replaces an existing key.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("host key: install %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

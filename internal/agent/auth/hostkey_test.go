package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateHostKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("second call returned a different key")
	}
	st, err := os.Stat(HostKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("key file mode %#o, want 0600", m)
	}
	dst, _ := os.Stat(filepath.Join(dir, HostKeyDir))
	if m := dst.Mode().Perm(); m != 0o700 {
		t.Errorf("key dir mode %#o, want 0700", m)
	}
	b, _ := os.ReadFile(HostKeyPath(dir))
	if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key file is not PEM PKCS#8:\n%s", b)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, HostKeyDir))
	if len(entries) != 1 {
		t.Errorf("leftover files: %v", entries)
	}
}

func TestLoadOrCreateHostKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 16
	keys := make([]ed25519.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			keys[i], errs[i] = LoadOrCreateHostKey(dir)
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("caller %d got a different key", i)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, HostKeyDir))
	if len(entries) != 1 {
		t.Errorf("leftover files: %v", entries)
	}
}

func TestLoadOrCreateHostKeyRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"group readable key", func(t *testing.T, dir string) {
			chmod(t, HostKeyPath(dir), 0o640)
		}, "chmod 600"},
		{"world readable key", func(t *testing.T, dir string) {
			chmod(t, HostKeyPath(dir), 0o604)
		}, "accessible by other users"},
		{"world writable dir", func(t *testing.T, dir string) {
			chmod(t, filepath.Join(dir, HostKeyDir), 0o777)
		}, "chmod 700"},
		{"garbage key", func(t *testing.T, dir string) {
			write(t, HostKeyPath(dir), "not a key\n")
		}, "no PEM block"},
		{"wrong PEM type", func(t *testing.T, dir string) {
			write(t, HostKeyPath(dir), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
		}, `want "PRIVATE KEY"`},
		{"trailing data", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(HostKeyPath(dir))
			write(t, HostKeyPath(dir), string(b)+"extra")
		}, "trailing data"},
		{"directory in place of key", func(t *testing.T, dir string) {
			if err := os.Remove(HostKeyPath(dir)); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(HostKeyPath(dir), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreateHostKey(dir); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir)
			before, _ := os.ReadFile(HostKeyPath(dir))
			_, err := LoadOrCreateHostKey(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			// A bad key is reported, never replaced.
			if after, _ := os.ReadFile(HostKeyPath(dir)); !bytes.Equal(before, after) {
				t.Fatal("key file changed")
			}
		})
	}
}

func TestHostKeyDecodeRejectsOtherKeyTypes(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = decodeHostKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err == nil || !strings.Contains(err.Error(), "want ed25519") {
		t.Fatalf("err = %v", err)
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

package sign

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestGenerateFilesAndPermissions(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	pub, err := kr.Generate("default")
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, filepath.Join(kr.Config, "keys")); m != 0o700 {
		t.Errorf("keys dir mode %#o", m)
	}
	if m := mode(t, kr.PrivatePath("default")); m != 0o600 {
		t.Errorf("private key mode %#o", m)
	}
	b, err := os.ReadFile(kr.PublicPath("default"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParsePublicKey(b); err != nil || got.ID != pub.ID || got.Name != "default" {
		t.Fatalf(".pub holds %+v, %v", got, err)
	}
	priv, err := kr.Load("default")
	if err != nil || priv.Public().ID != pub.ID {
		t.Fatalf("load: %v", err)
	}
	env := mustSign(t, priv, digestOf("m"))
	if _, err := Verify(env, digestOf("m"), NewKeySet(pub)); err != nil {
		t.Fatal(err)
	}

	if _, err := kr.Generate("default"); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second generate: %v", err)
	}
	if again, _ := kr.Load("default"); !again.Key.Equal(priv.Key) {
		t.Fatal("existing key replaced")
	}
	if _, err := kr.Generate("../evil"); err == nil {
		t.Fatal("path in name accepted")
	}
	if _, err := kr.Load("nope"); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "mvmctl key generate nope") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestLoadRefusesLooseKeyAndTightensDir(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	if _, err := kr.Generate("a"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kr.PrivatePath("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Load("a"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose key: %v", err)
	}
	if err := os.Chmod(filepath.Join(kr.Config, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Generate("b"); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, filepath.Join(kr.Config, "keys")); m != 0o700 {
		t.Errorf("keys dir left at %#o", m)
	}
}

func TestOwnListsKeys(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	if keys, err := kr.Own(); err != nil || len(keys) != 0 {
		t.Fatalf("empty: %v %v", keys, err)
	}
	for _, n := range []string{"b", "a"} {
		if _, err := kr.Generate(n); err != nil {
			t.Fatal(err)
		}
	}
	// A lost .pub does not lose the key: the public half comes from the
	// private one.
	if err := os.Remove(kr.PublicPath("a")); err != nil {
		t.Fatal(err)
	}
	keys, err := kr.Own()
	if err != nil || len(keys) != 2 || keys[0].Name != "a" || keys[1].Name != "b" {
		t.Fatalf("own: %+v %v", keys, err)
	}
}

func TestTrustUntrust(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	if set, err := kr.TrustedSet(); err != nil || len(set) != 0 {
		t.Fatalf("empty: %v %v", set, err)
	}
	alice, bob := mustKey(t, "alice").Public(), mustKey(t, "bob").Public()
	for _, p := range []PublicKey{alice, bob} {
		if added, err := kr.Trust(p); err != nil || !added {
			t.Fatalf("trust %s: %v %v", p.Name, added, err)
		}
	}
	if added, err := kr.Trust(alice); err != nil || added {
		t.Fatalf("trust again: %v %v", added, err)
	}
	if m := mode(t, filepath.Join(kr.Config, "trusted-keys")); m != 0o700 {
		t.Errorf("trusted-keys mode %#o", m)
	}
	if p := kr.TrustedPath(alice.ID); strings.Contains(filepath.Base(p), ":") {
		t.Errorf("colon in file name %s", p)
	}
	set, err := kr.TrustedSet()
	if err != nil || len(set) != 2 || set[alice.ID].Name != "alice" {
		t.Fatalf("set %v %v", set, err)
	}

	// A file copied in by hand under any name counts, and untrust finds it.
	text, _ := alice.MarshalText()
	if err := os.WriteFile(filepath.Join(kr.Config, "trusted-keys", "alice-laptop.pub"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := kr.Untrust(alice.ID); err != nil {
		t.Fatal(err)
	}
	set, _ = kr.TrustedSet()
	if _, ok := set[alice.ID]; ok || len(set) != 1 {
		t.Fatalf("after untrust: %v", set)
	}
	if err := kr.Untrust(alice.ID); !errors.Is(err, ErrNotTrusted) {
		t.Fatalf("untrust again: %v", err)
	}
	if err := kr.Untrust("alice"); err == nil || !strings.Contains(err.Error(), "mvmctl key list") {
		t.Fatalf("untrust by name: %v", err)
	}
}

func TestTrustedRefusesBadFilesAndLooseDirs(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	if _, err := kr.Trust(mustKey(t, "a").Public()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(kr.Config, "trusted-keys")
	bad := filepath.Join(dir, "broken.pub")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Trusted(); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("broken file: %v", err)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	// Files that are not .pub are not keys (the lock, editors' backups).
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if keys, err := kr.Trusted(); err != nil || len(keys) != 1 {
		t.Fatalf("with other files: %v %v", keys, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Trusted(); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("world-writable dir: %v", err)
	}
}

// Concurrent generates of one name: exactly one wins, and the key on disk
// is the winner's.
func TestConcurrentGenerate(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []PublicKey
	errs := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := NewKeyring(kr.Config).Generate("shared")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, p)
			case errors.Is(err, ErrKeyExists):
				errs++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || errs != 7 {
		t.Fatalf("%d won, %d refused", len(won), errs)
	}
	if p, err := kr.Public("shared"); err != nil || p.ID != won[0].ID {
		t.Fatalf("on disk %v, winner %v (%v)", p.ID, won[0].ID, err)
	}
}

func TestConcurrentTrust(t *testing.T) {
	kr := NewKeyring(t.TempDir())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := NewKeyring(kr.Config).Trust(mustKey(t, fmt.Sprintf("k%d", i)).Public()); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if keys, err := kr.Trusted(); err != nil || len(keys) != 8 {
		t.Fatalf("%d keys, %v", len(keys), err)
	}
}

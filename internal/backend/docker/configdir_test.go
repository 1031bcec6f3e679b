package docker

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// readGuestConfig decodes cfgDir's mvm.json, which must be a regular file.
func readGuestConfig(t *testing.T, cfgDir string) *guestcfg.Config {
	t.Helper()
	p := filepath.Join(cfgDir, guestcfg.FileName)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: mode %v, want a regular 0600 file", p, fi.Mode())
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := guestcfg.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return c
}

// TestLayoutNeverWritesThroughGuestLinks plays a guest that planted
// symlinks to host files in the config directory it had mounted read-write:
// the next start must leave their targets alone and still hand the new
// container its config.
func TestLayoutNeverWritesThroughGuestLinks(t *testing.T) {
	dir := t.TempDir()
	victims := t.TempDir()
	victim := filepath.Join(victims, "authorized_keys")
	const precious = "precious host data\n"
	if err := os.WriteFile(victim, []byte(precious), 0o644); err != nil {
		t.Fatal(err)
	}
	checkVictims := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(victim); err != nil || string(b) != precious {
			t.Fatalf("%s: victim is now %q (%v); the config was written through the guest's link", when, b, err)
		}
		if _, err := os.Lstat(filepath.Join(victims, guestcfg.FileName)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: a file appeared in the directory the guest linked to: %v", when, err)
		}
	}
	key := "guest-private-key-placeholder"
	spec := backend.Spec{Name: "a", Dir: dir,
		Guest: &guestcfg.Config{Version: 1, Name: "a", Hostname: "a", GuestPrivateKey: key}}

	// A container of an older mvmctl had config/ mounted; its guest left
	// mvm.json as a link to a host file (the agent had deleted the real one).
	legacy := filepath.Join(dir, legacyConfigDir)
	if err := os.Mkdir(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(legacy, guestcfg.FileName)); err != nil {
		t.Fatal(err)
	}
	first, err := layout(spec)
	if err != nil {
		t.Fatal(err)
	}
	checkVictims("first start")
	if c := readGuestConfig(t, first); c.GuestPrivateKey != key || c.Transport.UnixPath != GuestSocket {
		t.Fatalf("first start's config = %+v", c)
	}
	if _, err := os.Lstat(legacy); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old config directory is still there: %v", err)
	}

	// The guest of that container does the same in the directory it got,
	// and links a directory too.
	if err := os.Remove(filepath.Join(first, guestcfg.FileName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(first, guestcfg.FileName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victims, filepath.Join(first, "sub")); err != nil {
		t.Fatal(err)
	}
	second, err := layout(spec)
	if err != nil {
		t.Fatal(err)
	}
	checkVictims("second start")
	if second == first {
		t.Fatalf("second start reused the directory the guest had: %s", second)
	}
	if c := readGuestConfig(t, second); c.GuestPrivateKey != key {
		t.Fatalf("second start's config = %+v", c)
	}
	if _, err := os.Lstat(first); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the previous container's config directory is still there: %v", err)
	}
	if fi, err := os.Stat(second); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("config dir: %v, %v; want mode 0700", fi, err)
	}
}

// TestWriteNewRefusesExisting: the write never goes through an entry that
// is already there, a link (dangling or not) or a file.
func TestWriteNewRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	for name, plant := range map[string]func(string) error{
		"link":          func(p string) error { return os.Symlink(target, p) },
		"file":          func(p string) error { return os.WriteFile(p, []byte("x"), 0o600) },
		"dangling link": func(p string) error { return os.Symlink(filepath.Join(dir, "nowhere"), p) },
	} {
		p := filepath.Join(dir, name)
		if err := plant(p); err != nil {
			t.Fatal(err)
		}
		if err := writeNew(p, []byte("secret"), 0o600); !errors.Is(err, fs.ErrExist) {
			t.Errorf("%s: writeNew = %v, want ErrExist", name, err)
		}
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("writeNew created the link's target: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("writeNew created the dangling link's target: %v", err)
	}
}

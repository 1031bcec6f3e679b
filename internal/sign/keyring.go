package sign

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gofrs/flock"

	"github.com/mvm-dev/mvm/internal/store"
)

// Directories under the config root.
const (
	KeysDir    = "keys"         // own keys: NAME.key (0600) and NAME.pub
	TrustedDir = "trusted-keys" // keys we verify with: one .pub file each
	lockFile   = ".lock"
)

// Keyring is the keys on disk under one config root. Writers hold the
// directory's flock; every file is written atomically, so readers need no
// lock and never see half a key.
type Keyring struct {
	Config string // paths.Dirs.Config
}

// NewKeyring returns the keyring under configDir. It creates nothing.
func NewKeyring(configDir string) *Keyring { return &Keyring{Config: configDir} }

func (k *Keyring) keysDir() string    { return filepath.Join(k.Config, KeysDir) }
func (k *Keyring) trustedDir() string { return filepath.Join(k.Config, TrustedDir) }

// PrivatePath and PublicPath are where key name lives.
func (k *Keyring) PrivatePath(name string) string {
	return filepath.Join(k.keysDir(), name+".key")
}

// PublicPath is the public half of key name.
func (k *Keyring) PublicPath(name string) string {
	return filepath.Join(k.keysDir(), name+".pub")
}

// TrustedPath is where a trusted key lives: the ID with '-' for ':', which
// scp, rsync and tar would take for a host separator.
func (k *Keyring) TrustedPath(id string) string {
	return filepath.Join(k.trustedDir(), strings.ReplaceAll(id, ":", "-")+".pub")
}

// Generate creates key name and returns its public half. It never replaces
// a key: losing a private key cannot be undone, so an existing name is
// ErrKeyExists.
func (k *Keyring) Generate(name string) (PublicKey, error) {
	if err := ValidateName(name); err != nil {
		return PublicKey{}, err
	}
	priv, err := GenerateKey(name)
	if err != nil {
		return PublicKey{}, err
	}
	unlock, err := lockDir(k.keysDir())
	if err != nil {
		return PublicKey{}, err
	}
	defer unlock()
	path := k.PrivatePath(name)
	if _, err := os.Lstat(path); err == nil {
		return PublicKey{}, fmt.Errorf("%w: %s (pick another name; to replace it, move the file away first, and keep it if anything was signed with it)", ErrKeyExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return PublicKey{}, fmt.Errorf("generate key %s: %w", name, err)
	}
	pemBytes, err := priv.MarshalPEM()
	if err != nil {
		return PublicKey{}, err
	}
	pub := priv.Public()
	text, err := pub.MarshalText()
	if err != nil {
		return PublicKey{}, err
	}
	// Public first: a crash between the two leaves a stray .pub that the
	// next Generate overwrites, never a private key without its pair.
	if err := store.WriteFileAtomic(k.PublicPath(name), text, 0o644); err != nil {
		return PublicKey{}, fmt.Errorf("generate key %s: %w", name, err)
	}
	if err := store.WriteFileAtomic(path, pemBytes, 0o600); err != nil {
		return PublicKey{}, fmt.Errorf("generate key %s: %w", name, err)
	}
	return pub, nil
}

// Load reads private key name for signing. Like ssh, it refuses a key file
// that other users can read.
func (k *Keyring) Load(name string) (*PrivateKey, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	path := k.PrivatePath(name)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q (create it with 'mvmctl key generate %s')", ErrNoKey, name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", name, err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("load key %s: %s is accessible to other users (mode %#o): run chmod 600 %s", name, path, m, path)
	}
	b, err := readSmall(path)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", name, err)
	}
	return ParsePrivateKey(name, b)
}

// Public returns own key name's public half, derived from the private key
// so that a missing or edited .pub cannot disagree with what signs.
func (k *Keyring) Public(name string) (PublicKey, error) {
	priv, err := k.Load(name)
	if err != nil {
		return PublicKey{}, err
	}
	return priv.Public(), nil
}

// Own lists own keys by name.
func (k *Keyring) Own() ([]PublicKey, error) {
	ents, err := os.ReadDir(k.keysDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	var out []PublicKey
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || e.IsDir() || ValidateName(name) != nil {
			continue
		}
		pub, err := k.Public(name)
		if err != nil {
			return nil, err
		}
		out = append(out, pub)
	}
	return out, nil
}

// Trusted lists the trusted keys, sorted by ID. A file that does not parse
// is an error naming it, not skipped: a trust list that silently shrinks
// is as confusing as one that grows. The directory and its files must not
// be writable by other users, who could otherwise add keys.
func (k *Keyring) Trusted() ([]PublicKey, error) {
	dir := k.trustedDir()
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	if m := st.Mode().Perm(); m&0o022 != 0 {
		return nil, fmt.Errorf("trusted keys: %s is writable by other users (mode %#o): run chmod 700 %s", dir, m, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	byID := map[string]PublicKey{}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pub") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		pub, err := readTrusted(path)
		if err != nil {
			return nil, err
		}
		byID[pub.ID] = pub
	}
	out := make([]PublicKey, 0, len(byID))
	for _, p := range byID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func readTrusted(path string) (PublicKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("trusted keys: %w", err)
	}
	if m := st.Mode().Perm(); m&0o022 != 0 {
		return PublicKey{}, fmt.Errorf("trusted keys: %s is writable by other users (mode %#o): run chmod 644 %s", path, m, path)
	}
	b, err := readSmall(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("trusted keys: %w", err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return PublicKey{}, fmt.Errorf("trusted keys: %s: %w (fix or remove the file)", path, err)
	}
	return pub, nil
}

// TrustedSet is Trusted as a KeySet for Verify.
func (k *Keyring) TrustedSet() (KeySet, error) {
	keys, err := k.Trusted()
	if err != nil {
		return nil, err
	}
	return NewKeySet(keys...), nil
}

// Trust adds pub to the trusted keys. added is false when it was trusted
// already (the file is left as it is, name included).
func (k *Keyring) Trust(pub PublicKey) (added bool, err error) {
	pub.ID = KeyID(pub.Key)
	text, err := pub.MarshalText()
	if err != nil {
		return false, err
	}
	unlock, err := lockDir(k.trustedDir())
	if err != nil {
		return false, err
	}
	defer unlock()
	keys, err := k.Trusted()
	if err != nil {
		return false, err
	}
	for _, t := range keys {
		if t.ID == pub.ID {
			return false, nil
		}
	}
	if err := store.WriteFileAtomic(k.TrustedPath(pub.ID), text, 0o644); err != nil {
		return false, fmt.Errorf("trust %s: %w", pub.ID, err)
	}
	return true, nil
}

// Untrust removes every trusted-keys file holding key id (files copied in
// by hand may have any name). Files that do not parse are left alone.
func (k *Keyring) Untrust(id string) error {
	if !validKeyID(id) {
		return fmt.Errorf("invalid key ID %q: want \"ed25519:\" and 16 hex digits, as 'mvmctl key list' prints", id)
	}
	dir := k.trustedDir()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotTrusted, id)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("untrust %s: %w", id, err)
	}
	removed := 0
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pub") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := readSmall(path)
		if err != nil {
			continue
		}
		if pub, err := ParsePublicKey(b); err != nil || pub.ID != id {
			continue
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("untrust %s: %w", id, err)
		}
		removed++
	}
	if removed == 0 {
		return fmt.Errorf("%w: %s ('mvmctl key list' shows the trusted ones)", ErrNotTrusted, id)
	}
	return nil
}

// lockDir creates dir (0700, tightened if wider) and takes its flock.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict %s: %w", dir, err)
		}
	}
	l := flock.New(filepath.Join(dir, lockFile), flock.SetPermissions(0o600))
	if err := l.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { _ = l.Unlock() }, nil
}

// readSmall reads a key file: a regular file (a FIFO would block the
// open) no larger than a key file can be.
func readSmall(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := ReadLimited(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// ReadLimited reads a key file's bytes from r (a file or stdin), at most
// 4 KiB.
func ReadLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("more than %d bytes: not a key file", maxKeyFile)
	}
	return b, nil
}

package vm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/store"
)

// guestPinFile holds the guest's public key (auth.MarshalPublicKey text) in
// the VM directory: the only key the host accepts from that VM's agent. It
// lives beside the record, not in it, and is written before the drive that
// carries the matching private key.
const guestPinFile = "guest.pub"

// provisionAgentKeys gives a VM a fresh identity before it boots: a new
// guest key pair (private half into gc, for the config drive; public half
// pinned in dir) and the user's host public key (created on first use).
func (m *Manager) provisionAgentKeys(dir string, gc *guestcfg.Config) error {
	hostKey, err := m.hostKeyFor(dir)
	if err != nil {
		return err
	}
	hostPub, err := auth.MarshalPublicKey(hostKey.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	priv, pub, err := auth.NewGuestKey()
	if err != nil {
		return err
	}
	privText, err := auth.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	pubText, err := auth.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	if err := store.WriteFileAtomic(filepath.Join(dir, guestPinFile), []byte(pubText+"\n"), 0o600); err != nil {
		return fmt.Errorf("pin guest key: %w", err)
	}
	gc.HostPublicKey, gc.GuestPrivateKey = hostPub, privText
	return nil
}

// bootstrapKeyFile, in a VM directory, is a host key of the VM's own used
// instead of the user's: a template's build VM has one, its snapshot keeps
// it, and a clone restored from that snapshot uses it only until
// post-restore has given the guest the user's key and a guest key of its
// own. It lets a template restore on any host that holds it.
const bootstrapKeyFile = "host.key"

// hostKeyFor is the host key the agent of the VM in dir trusts.
func (m *Manager) hostKeyFor(dir string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return auth.LoadOrCreateHostKey(m.Dirs.Config)
	}
	if err != nil {
		return nil, err
	}
	k, err := auth.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, bootstrapKeyFile), err)
	}
	return k, nil
}

// writeBootstrapKey gives the VM in dir a fresh host key of its own.
func writeBootstrapKey(dir string) error {
	priv, _, err := auth.NewGuestKey() // any Ed25519 key pair will do
	if err != nil {
		return err
	}
	text, err := auth.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(filepath.Join(dir, bootstrapKeyFile), []byte(text+"\n"), 0o600)
}

// copyBootstrapKey carries a bootstrap key, when from has one.
func copyBootstrapKey(fromDir, toDir string) error {
	b, err := os.ReadFile(filepath.Join(fromDir, bootstrapKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(filepath.Join(toDir, bootstrapKeyFile), b, 0o600)
}

// rekeyRequest makes a clone's new identity: the user's host key and a
// fresh guest key, with the text of its public half to pin once the guest
// has taken it.
func (m *Manager) rekeyRequest(req *proto.PostRestoreRequest) (pinText string, err error) {
	hostKey, err := auth.LoadOrCreateHostKey(m.Dirs.Config)
	if err != nil {
		return "", err
	}
	if req.HostPublicKey, err = auth.MarshalPublicKey(hostKey.Public().(ed25519.PublicKey)); err != nil {
		return "", err
	}
	priv, pub, err := auth.NewGuestKey()
	if err != nil {
		return "", err
	}
	if req.GuestPrivateKey, err = auth.MarshalPrivateKey(priv); err != nil {
		return "", err
	}
	return auth.MarshalPublicKey(pub)
}

// sealConfigDrive makes the drive readable by its owner only: it holds the
// guest's private key.
func sealConfigDrive(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return nil
}

// copyGuestPin carries a guest key pin from one directory to another: a
// snapshot keeps its source's pin, and a VM restored from it wakes up with
// the key in the snapshot's memory, so it must be pinned to that key.
func copyGuestPin(fromDir, toDir string) error {
	b, err := os.ReadFile(filepath.Join(fromDir, guestPinFile))
	if err != nil {
		return fmt.Errorf("guest key pin: %w", err)
	}
	if _, err := auth.ParsePublicKey(string(b)); err != nil {
		return fmt.Errorf("guest key pin in %s: %w", fromDir, err)
	}
	return store.WriteFileAtomic(filepath.Join(toDir, guestPinFile), b, 0o600)
}

// agentAuth builds the TLS wrap for the VM in dir: our host key, and only
// the guest key pinned for that VM.
func (m *Manager) agentAuth(dir string) (func(net.Conn) (net.Conn, error), error) {
	b, err := os.ReadFile(filepath.Join(dir, guestPinFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent authentication: no guest key is pinned for this VM (%s missing); it was created by an older mvmctl: recreate it", guestPinFile)
	}
	if err != nil {
		return nil, fmt.Errorf("agent authentication: %w", err)
	}
	guestPub, err := auth.ParsePublicKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("agent authentication: %s: %w", guestPinFile, err)
	}
	hostKey, err := m.hostKeyFor(dir)
	if err != nil {
		return nil, fmt.Errorf("agent authentication: %w", err)
	}
	cfg, err := auth.ClientConfig(hostKey, guestPub)
	if err != nil {
		return nil, err
	}
	return auth.ClientWrap(cfg), nil
}

// clientWithPin is an agent client for h that trusts the guest key pinText
// and presents the user's host key (a clone's keys after post-restore).
func (m *Manager) clientWithPin(h backend.Handle, pinText string) (*client.Client, error) {
	guestPub, err := auth.ParsePublicKey(pinText)
	if err != nil {
		return nil, err
	}
	hostKey, err := auth.LoadOrCreateHostKey(m.Dirs.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := auth.ClientConfig(hostKey, guestPub)
	if err != nil {
		return nil, err
	}
	return client.New(func(ctx context.Context) (net.Conn, error) { return h.DialAgent(ctx) }, client.WithWrap(auth.ClientWrap(cfg))), nil
}

// agentClient returns an authenticated agent client for the VM name that
// dials through h. A VM without a usable pin gets a client whose every call
// fails with the reason, so callers need no second error path.
func (m *Manager) agentClient(h backend.Handle, name string) *client.Client {
	wrap, err := m.agentAuth(m.Store.Dir(name))
	if err != nil {
		return client.New(func(context.Context) (net.Conn, error) { return nil, err })
	}
	return client.New(func(ctx context.Context) (net.Conn, error) { return h.DialAgent(ctx) }, client.WithWrap(wrap))
}

// Agent returns the authenticated agent client of a running VM, for verbs
// that drive the agent themselves (exec -t, console, forward).
func (m *Manager) Agent(ctx context.Context, name, verb string) (*client.Client, error) {
	_, h, err := m.running(ctx, name, verb)
	if err != nil {
		return nil, err
	}
	return m.agentClient(h, name), nil
}

package security

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// maxKeyFile bounds what is read of a key file (auth reads at most 64 KiB).
const maxKeyFile = 64 << 10

// checkAgentAuth: the host key exists, is 0600 and an Ed25519 key; the
// config and key directories are 0700; every VM has its guest key pinned.
// Nothing is created: auth.LoadOrCreateHostKey would make a missing key.
func checkAgentAuth(e *Env) []Check {
	var out []Check
	dirCheck := func(name, path, what string) {
		exists, c := inspect(pathRule{path: path, what: what, level: private, dir: true, follow: true}, e.Euid, name)
		switch {
		case c != nil:
			out = append(out, *c)
		case !exists:
			out = append(out, Check{Status: Info, Check: name, Detail: what + " " + path + " does not exist yet; mvmctl creates it 0700 on first use"})
		default:
			out = append(out, Check{Status: Pass, Check: name, Detail: what + " " + path + " is private to you (no access for group or others)"})
		}
	}
	if e.Dirs.Config == "" {
		return []Check{{Status: Warn, Check: "agent host key", Detail: "no config directory resolved", Fix: "set HOME or MVM_CONFIG_DIR"}}
	}
	dirCheck("agent config directory", e.Dirs.Config, "config directory")
	dirCheck("agent key directory", filepath.Join(e.Dirs.Config, auth.HostKeyDir), "host key directory")
	out = append(out, hostKeyCheck(auth.HostKeyPath(e.Dirs.Config), e.Euid, len(e.VMs)))
	return append(out, pinChecks(e)...)
}

// hostKeyCheck inspects the host key file the way auth.LoadOrCreateHostKey
// would use it, without ever creating it.
func hostKeyCheck(path string, euid, vms int) Check {
	const name = "agent host key"
	exists, c := inspect(pathRule{path: path, what: "host key", level: secret, follow: true}, euid, name)
	if c != nil {
		if c.Status == Fail && strings.Contains(c.Detail, "readable by group") {
			c.Detail += "; mvmctl refuses to use it, and whoever read it can pass as you to every VM"
		}
		return *c
	}
	if !exists {
		if vms == 0 {
			return Check{Status: Info, Check: name, Detail: path + " does not exist yet; mvmctl makes it (0600, Ed25519) on the first 'mvmctl up'"}
		}
		return Check{Status: Warn, Check: name,
			Detail: path + " is missing, but VMs exist: they were booted with a host key that is gone and will refuse mvmctl's new one",
			Fix:    "mvmctl restart each VM (a restart writes the new host key to its config drive)"}
	}
	pub, err := readHostPublicKey(path)
	if err != nil {
		return Check{Status: Fail, Check: name, Detail: path + ": " + err.Error() + "; mvmctl refuses it",
			Fix: "move it aside (mvmctl makes a new key on next use), then restart every VM"}
	}
	return Check{Status: Pass, Check: name,
		Detail: fmt.Sprintf("%s: Ed25519 %s, mode 0600; every VM accepts only this key (TLS 1.3)", path, auth.Fingerprint(pub))}
}

// readHostPublicKey decodes the key file as auth does (exactly one PKCS#8
// Ed25519 PEM block) and returns only its public half.
func readHostPublicKey(path string) (ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	defer clear(b)
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFile)
	}
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("not a single PKCS#8 PEM block")
	}
	defer clear(blk.Bytes)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, not Ed25519", k)
	}
	defer clear(priv)
	return append(ed25519.PublicKey(nil), priv.Public().(ed25519.PublicKey)...), nil
}

// active reports whether a record's VMM should be running.
func active(rec *store.Record) bool {
	switch backend.State(rec.State) {
	case backend.StateStarting, backend.StateRunning, backend.StatePaused, backend.StateStopping:
		return true
	}
	return false
}

// pinChecks: every VM has guest.pub, an Ed25519 public key only its owner
// can change. Without one mvmctl refuses to talk to the VM (vm.agentAuth);
// a pin others can write lets them choose whom mvmctl trusts as that VM.
func pinChecks(e *Env) []Check {
	const name = "agent guest keys"
	var out []Check
	var good []string
	for _, rec := range e.VMs {
		p := filepath.Join(e.vmDir(rec), guestPinFile)
		// A public key: others may read it, never write it.
		exists, c := inspect(pathRule{path: p, what: "guest key pin of " + rec.Name, level: shared}, e.Euid, name)
		if c != nil {
			out = append(out, *c)
			continue
		}
		if !exists {
			if active(rec) {
				out = append(out, Check{Status: Warn, Check: name,
					Detail: fmt.Sprintf("VM %s (%s) has no pinned guest key (%s): mvmctl cannot authenticate it and refuses to talk to it", rec.Name, rec.State, p),
					Fix:    "mvmctl restart " + rec.Name + " (every boot makes and pins a new guest key)"})
			} else {
				out = append(out, Check{Status: Info, Check: name,
					Detail: fmt.Sprintf("VM %s (%s) has no pinned guest key yet; its next start makes one", rec.Name, rec.State)})
			}
			continue
		}
		b, err := readSmall(p)
		if err == nil {
			_, err = auth.ParsePublicKey(string(b))
		}
		if err != nil {
			out = append(out, Check{Status: Warn, Check: name,
				Detail: fmt.Sprintf("VM %s: %s is unusable (%v): mvmctl refuses to talk to it", rec.Name, p, err),
				Fix:    "mvmctl restart " + rec.Name})
			continue
		}
		good = append(good, rec.Name)
	}
	switch {
	case len(good) > 0:
		out = append([]Check{{Status: Pass, Check: name,
			Detail: fmt.Sprintf("pinned for %s: %s (Ed25519, made before boot, only its owner can change it)", plural(len(good), "VM", "VMs"), strings.Join(good, ", "))}}, out...)
	case len(out) == 0:
		out = append(out, Check{Status: Info, Check: name, Detail: "no VMs"})
	}
	return out
}

// readSmall reads a file of at most maxKeyFile bytes.
func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxKeyFile)
	}
	return b, nil
}

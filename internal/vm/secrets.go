package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/store"
)

// Secrets reach a guest in one way only: read on the host when the verb
// runs (--secret NAME=@FILE or NAME=env:VAR), sent by the agent's secrets
// operation over the authenticated channel once the agent answers, and
// written by the agent into a tmpfs at /run/secrets. The host keeps no
// value anywhere: not on the config drive, a disk, the VM directory, logs
// or the record, which lists the names only (Record.Secrets) so that
// start/restart can ask for them again.

// secretsKernelArgs are added to the kernel command line of a VM booted
// with secrets: the guest kernel zeroes pages as they are freed, so values
// that passed through a process (the agent, a cat) do not linger in free
// memory, and a snapshot after --drop-secrets saves none.
const secretsKernelArgs = "init_on_free=1"

// secretDeliverTimeout bounds delivering the secrets once the agent has
// answered.
const secretDeliverTimeout = 30 * time.Second

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// SecretFlagHelp describes --secret for the CLI's flags.
const SecretFlagHelp = "secret for the guest, as NAME=@FILE (read on the host) or NAME=env:VAR (from mvmctl's environment); " +
	"the agent puts it in /run/secrets/NAME (tmpfs, 0400, owned by the image's service user or root); repeatable"

// ParseSecretFlags reads --secret values: NAME=@FILE reads FILE, NAME=env:VAR
// takes $VAR (lookupEnv; nil means os.LookupEnv). Names are checked like
// the agent checks them, every value and the total are bounded, and a name
// given twice is refused. Errors quote the flag, never a value.
func ParseSecretFlags(specs []string, lookupEnv func(string) (string, bool)) ([]proto.Secret, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	var out []proto.Secret
	fail := func(err error) ([]proto.Secret, error) {
		wipeSecrets(out)
		return nil, err
	}
	total := 0
	for _, spec := range specs {
		name, src, ok := strings.Cut(spec, "=")
		if !ok {
			if proto.ValidateSecretName(spec) == nil {
				return fail(fmt.Errorf("--secret %s: want NAME=@FILE or NAME=env:VAR", spec))
			}
			// Not echoed: it may be a value typed in place of NAME=@FILE.
			return fail(errors.New("--secret: a value has no '=': want NAME=@FILE or NAME=env:VAR"))
		}
		if err := proto.ValidateSecretName(name); err != nil {
			return fail(fmt.Errorf("--secret %s: %w", spec, err))
		}
		if slices.ContainsFunc(out, func(s proto.Secret) bool { return s.Name == name }) {
			return fail(fmt.Errorf("--secret %s: secret %s is given twice", spec, name))
		}
		var data []byte
		switch {
		case strings.HasPrefix(src, "@"):
			path := src[1:]
			if path == "" {
				return fail(fmt.Errorf("--secret %s: no file after '@'", spec))
			}
			var err error
			if data, err = readSecretFile(path); err != nil {
				return fail(fmt.Errorf("--secret %s: %w", spec, err))
			}
		case strings.HasPrefix(src, "env:"):
			v := src[len("env:"):]
			if !envNameRE.MatchString(v) {
				return fail(fmt.Errorf("--secret %s: %q is not an environment variable name", spec, v))
			}
			val, ok := lookupEnv(v)
			if !ok {
				return fail(fmt.Errorf("--secret %s: environment variable %s is not set", spec, v))
			}
			data = []byte(val)
		default:
			// Not "NAME=VALUE": a value on the command line would end up in
			// shell history and the process list.
			return fail(fmt.Errorf("--secret %s=...: want NAME=@FILE or NAME=env:VAR (values are never given on the command line)", name))
		}
		if len(data) > proto.MaxSecretSize {
			clear(data)
			return fail(fmt.Errorf("--secret %s: more than %d bytes (64 KiB), the most a secret may hold", spec, proto.MaxSecretSize))
		}
		out = append(out, proto.Secret{Name: name, Data: data})
		if total += len(data); total > proto.MaxSecretsTotal {
			return fail(fmt.Errorf("--secret: %d bytes of secrets in all, at most %d", total, proto.MaxSecretsTotal))
		}
	}
	if len(out) > proto.MaxSecrets {
		return fail(fmt.Errorf("--secret: %d secrets, at most %d", len(out), proto.MaxSecrets))
	}
	return out, nil
}

// readSecretFile reads at most one byte more than a secret may hold, so a
// huge file (or an endless pipe) fails without being read whole.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, proto.MaxSecretSize+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// wipeSecrets zeroes the values in host memory once they are delivered.
func wipeSecrets(secrets []proto.Secret) {
	for _, s := range secrets {
		clear(s.Data)
	}
}

func secretNames(secrets []proto.Secret) []string {
	if len(secrets) == 0 {
		return nil
	}
	out := make([]string, len(secrets))
	for i, s := range secrets {
		out[i] = s.Name
	}
	return out
}

// checkSecretsGiven refuses to boot a VM whose record lists secrets that
// were not given again: the host never kept their values.
func checkSecretsGiven(rec *store.Record, given []proto.Secret, verb string) error {
	var missing []string
	for _, n := range rec.Secrets {
		if !slices.ContainsFunc(given, func(s proto.Secret) bool { return s.Name == n }) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	flags := make([]string, len(missing))
	for i, n := range missing {
		flags[i] = "--secret " + n + "=@FILE"
	}
	return fmt.Errorf("VM %s was created with secrets %s, and mvmctl does not keep secret values: give them again with 'mvmctl %s %s %s' (or NAME=env:VAR)",
		rec.Name, strings.Join(missing, ", "), verb, rec.Name, strings.Join(flags, " "))
}

// agentContact holds, per record being booted, what to do the first time
// its agent answers (waitReady). Secrets go then rather than once the
// guest is ready: a service that needs one would otherwise keep the guest
// from ever becoming ready.
var agentContact sync.Map // *store.Record → func(context.Context, *client.Client) error

// deliverOnContact records the secrets' names in rec and arranges for the
// values to reach the agent as soon as it answers during this boot. The
// returned func, deferred by the caller, drops the arrangement and wipes
// the values; delivery errors end the boot (waitReady returns them).
func (m *Manager) deliverOnContact(rec *store.Record, secrets []proto.Secret, p *progress) func() {
	rec.Secrets = secretNames(secrets)
	if len(secrets) == 0 {
		return func() {}
	}
	agentContact.Store(rec, func(ctx context.Context, ac *client.Client) error {
		return m.deliverSecrets(ctx, ac, rec.Name, secrets, p)
	})
	return func() {
		agentContact.Delete(rec)
		wipeSecrets(secrets)
	}
}

// firstContact runs (once) what deliverOnContact arranged for rec.
func firstContact(ctx context.Context, rec *store.Record, ac *client.Client) error {
	fn, ok := agentContact.LoadAndDelete(rec)
	if !ok {
		return nil
	}
	return fn.(func(context.Context, *client.Client) error)(ctx, ac)
}

// deliverSecrets sends the whole set; an empty set removes every secret
// from the guest. Transport failures are retried for a while (the link may
// still be settling); an answer from the agent is final.
func (m *Manager) deliverSecrets(ctx context.Context, ac *client.Client, name string, secrets []proto.Secret, p *progress) error {
	deadline := time.Now().Add(secretDeliverTimeout)
	req := proto.SecretsRequest{Secrets: secrets}
	what := "secrets " + strings.Join(secretNames(secrets), ", ")
	if len(secrets) == 0 {
		what = "removal of the secrets"
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := ac.Secrets(actx, req)
		cancel()
		if err == nil {
			if len(secrets) > 0 {
				p.emit("secrets", fmt.Sprintf("%d secrets in %s (%s)", len(res.Files), res.Dir, res.Storage))
			} else {
				p.emit("secrets", fmt.Sprintf("removed %d secret files from the guest", res.Removed))
			}
			if res.Note != "" {
				p.emit("warning", "secrets: "+res.Note)
				m.Log.Warn("secrets: "+res.Note, "vm", name)
			}
			m.Log.Debug("secrets delivered", "vm", name, "names", strings.Join(secretNames(secrets), ","), "storage", res.Storage, "removed", res.Removed)
			return nil
		}
		if _, ok := proto.AsError(err); ok || ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("VM %s: %s: %w", name, what, err)
		}
		m.Log.Debug("secrets: agent not reachable yet", "vm", name, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("VM %s: %s: %w", name, what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errSecretsHeld is the refusal to snapshot a VM that holds secrets.
var errSecretsHeld = errors.New("a snapshot saves the guest's memory, and with it /run/secrets")

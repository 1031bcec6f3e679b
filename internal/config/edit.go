package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Kinds of value a key holds.
const (
	KindInt      = "integer"
	KindString   = "string"
	KindDuration = "duration"
	KindBool     = "boolean"
	KindStrings  = "list of strings"
)

// Key is one key of config.toml that `config get|set|unset` know; a dotted
// name is a key of a table ("trust.require_signatures"). Default is what
// mvm uses when no file sets it.
type Key struct {
	Name    string
	Kind    string
	Help    string
	Default any
}

var keys = []Key{
	{"default_cpus", KindInt, "vCPUs of a new VM (1-255)", BuiltinCPUs},
	{"default_memory_mib", KindInt, "memory of a new VM in MiB (at least 64)", BuiltinMemoryMiB},
	{"default_backend", KindString, "backend of a new VM (qemu, firecracker, docker, …; empty: auto)", "auto"},
	{"default_image", KindString, "image of a new VM", BuiltinImage},
	{"default_network", KindString, "network a new VM joins (\"none\": no NIC)", "default"},
	{"boot_timeout", KindDuration, "how long up waits for the agent", BuiltinBootTimeout.String()},
	{"stop_timeout", KindDuration, "how long down waits before forcing", BuiltinStopTimeout.String()},
	{"console_idle_timeout", KindDuration, "an unused console session ends after this", BuiltinConsoleIdle.String()},
	{"trust.require_signatures", KindBool, "refuse unsigned templates from every store", false},
	{"trust.require_signatures_for", KindStrings, "stores (prefixes) whose templates must be signed", []string{}},
	{"update.url", KindString, "where mvmctl update finds releases (https)", ""},
	// Unset: the key this build pins (update --check names the signer).
	{"update.key", KindString, "public key file releases must be signed by (default: the key this build pins)", ""},
}

// Keys lists the keys of config.toml.
func Keys() []Key { return append([]Key(nil), keys...) }

// LookupKey finds a key by name, with an error listing the known ones.
func LookupKey(name string) (Key, error) {
	for _, k := range keys {
		if k.Name == name {
			return k, nil
		}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return Key{}, fmt.Errorf("unknown config key %q (known: %s)", name, strings.Join(names, ", "))
}

// Get returns key's value in c and whether c sets it.
func (c *Config) Get(name string) (any, bool, error) {
	if _, err := LookupKey(name); err != nil {
		return nil, false, err
	}
	switch name {
	case "default_cpus":
		return c.DefaultCPUs, c.DefaultCPUs != 0, nil
	case "default_memory_mib":
		return c.DefaultMemoryMiB, c.DefaultMemoryMiB != 0, nil
	case "default_backend":
		return c.DefaultBackend, c.DefaultBackend != "", nil
	case "default_image":
		return c.DefaultImage, c.DefaultImage != "", nil
	case "default_network":
		return c.DefaultNetwork, c.DefaultNetwork != "", nil
	case "boot_timeout":
		return time.Duration(c.BootTimeout).String(), c.BootTimeout != 0, nil
	case "stop_timeout":
		return time.Duration(c.StopTimeout).String(), c.StopTimeout != 0, nil
	case "console_idle_timeout":
		return time.Duration(c.ConsoleIdleTimeout).String(), c.ConsoleIdleTimeout != 0, nil
	case "trust.require_signatures":
		return c.Trust.RequireSignatures, c.Trust.RequireSignatures, nil
	case "update.url":
		return c.Update.URL, c.Update.URL != "", nil
	case "update.key":
		return c.Update.Key, c.Update.Key != "", nil
	case "trust.require_signatures_for":
		l := c.Trust.RequireSignaturesFor
		if l == nil {
			l = []string{}
		}
		return l, len(l) > 0, nil
	}
	return nil, false, fmt.Errorf("config key %q has no getter", name)
}

// literal turns a command-line value for k into the TOML it is written as.
// Ranges are checked afterwards, by parsing the whole edited file.
func literal(k Key, value string) (string, error) {
	var v any
	switch k.Kind {
	case KindInt:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return "", fmt.Errorf("%s wants an integer, not %q", k.Name, value)
		}
		v = n
	case KindString:
		v = value
	case KindDuration:
		d, err := time.ParseDuration(value)
		if err != nil || d < 0 {
			return "", fmt.Errorf("%s wants a duration such as \"90s\" or \"2m\", not %q", k.Name, value)
		}
		v = value
	case KindBool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return "", fmt.Errorf("%s wants true or false, not %q", k.Name, value)
		}
		v = b
	case KindStrings:
		l := []string{}
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				l = append(l, s)
			}
		}
		v = l
	default:
		return "", fmt.Errorf("config key %s: unknown kind %s", k.Name, k.Kind)
	}
	b, err := toml.Marshal(map[string]any{"v": v})
	if err != nil {
		return "", err
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "v = ")
	if !ok {
		return "", fmt.Errorf("config key %s: cannot encode %q", k.Name, value)
	}
	return lit, nil
}

// SetInFile sets key to value in the config file at path (created if
// missing), keeping every other byte (comments, order, other keys). The
// edited file must load as Load would load it, or nothing is written.
func SetInFile(path, name, value string) error {
	k, err := LookupKey(name)
	if err != nil {
		return err
	}
	lit, err := literal(k, value)
	if err != nil {
		return err
	}
	return editFile(path, func(b []byte) ([]byte, error) { return setKey(b, k.Name, lit) })
}

// UnsetInFile removes key from the config file at path (the built-in
// default applies again). Unsetting a key the file does not set is not an
// error.
func UnsetInFile(path, name string) error {
	k, err := LookupKey(name)
	if err != nil {
		return err
	}
	return editFile(path, func(b []byte) ([]byte, error) { return setKey(b, k.Name, "") })
}

func editFile(path string, edit func([]byte) ([]byte, error)) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	lk := flock.New(path + ".lock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := lk.TryLockContext(ctx, 50*time.Millisecond); err != nil || !ok {
		return fmt.Errorf("lock %s: %v (is another 'mvmctl config set' running?)", path, err)
	}
	defer lk.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read config: %w", err)
	}
	if _, err := Parse(path, old); err != nil {
		return fmt.Errorf("%w (fix the file by hand first; nothing was changed)", err)
	}
	b, err := edit(old)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := Parse(path, b); err != nil {
		return fmt.Errorf("%w (nothing was changed)", err)
	}
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config.toml.*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone already once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// setKey replaces the key's line in doc with `key = lit`, or removes it
// when lit is empty, or adds it where TOML wants it: a top-level key before
// the first table, a table's key after that table's last key (the table is
// added at the end if missing). A key written dotted at the top level
// ("trust.x = …") is found too.
func setKey(doc []byte, dotted, lit string) ([]byte, error) {
	table, key := "", dotted
	if i := strings.LastIndexByte(dotted, '.'); i >= 0 {
		table, key = dotted[:i], dotted[i+1:]
	}
	var p unstable.Parser
	p.Reset(doc)
	cur := ""
	var found *unstable.Range // the key's `key = value`
	topEnd, tableEnd := 0, -1 // where a new key of the top level / of table goes
	seenTable := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			cur = joinKey(e.Key())
			if e.Kind == unstable.ArrayTable {
				cur = "[[" + cur + "]]"
			}
			seenTable = true
			if cur == table {
				tableEnd = lineEnd(doc, lastKeyEnd(e.Key()))
			}
		case unstable.KeyValue:
			k := joinKey(e.Key())
			if cur != "" {
				k = cur + "." + k
			}
			end := lineEnd(doc, int(e.Raw.Offset+e.Raw.Length))
			if k == dotted {
				if found != nil {
					return nil, fmt.Errorf("%s is set twice", dotted)
				}
				r := e.Raw
				found = &r
			}
			if cur == "" && !seenTable {
				topEnd = end
			}
			if cur == table && table != "" {
				tableEnd = end
			}
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	var out []byte
	switch {
	case found != nil && lit == "":
		// The whole line goes, comment and all.
		from, to := lineStart(doc, int(found.Offset)), lineEnd(doc, int(found.Offset+found.Length))
		out = append(append(out, doc[:from]...), doc[to:]...)
	case found != nil:
		// Only `key = value`: a comment after it stays. A key written
		// dotted at the top level stays dotted.
		from, to := int(found.Offset), int(found.Offset+found.Length)
		name := key
		if bytes.HasPrefix(doc[from:to], []byte(table+".")) && table != "" {
			name = dotted
		}
		out = append(append(append(out, doc[:from]...), name+" = "+lit...), doc[to:]...)
	case lit == "":
		return doc, nil
	case table == "":
		out = append(append(append(out, doc[:topEnd]...), key+" = "+lit+"\n"...), doc[topEnd:]...)
	case tableEnd >= 0:
		out = append(append(append(out, doc[:tableEnd]...), key+" = "+lit+"\n"...), doc[tableEnd:]...)
	default:
		out = append(out, doc...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		if len(out) > 0 {
			out = append(out, '\n')
		}
		out = append(out, "["+table+"]\n"+key+" = "+lit+"\n"...)
	}
	return out, nil
}

func joinKey(it unstable.Iterator) string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return strings.Join(parts, ".")
}

// lastKeyEnd is the offset just past a header's last key part.
func lastKeyEnd(it unstable.Iterator) int {
	end := 0
	for it.Next() {
		r := it.Node().Raw
		end = int(r.Offset + r.Length)
	}
	return end
}

// lineEnd is the offset just past the newline ending the line at off (or
// the document's end).
func lineEnd(doc []byte, off int) int {
	if i := bytes.IndexByte(doc[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(doc)
}

// lineStart is the offset of the start of the line holding off.
func lineStart(doc []byte, off int) int {
	return bytes.LastIndexByte(doc[:off], '\n') + 1
}

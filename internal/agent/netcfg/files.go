package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

const header = "# Written by mvm-agent from the VM's network config; rewritten at boot and after restore.\n"

// writeFiles writes resolv.conf and hosts into c.Etc.
func (c *Configurator) writeFiles(n *guestcfg.Network) error {
	etc := c.Etc
	if etc == "" {
		etc = DefaultEtc
	}
	resolv, err := RenderResolvConf(n)
	if err != nil {
		return err
	}
	hosts, err := RenderHosts(n)
	if err != nil {
		return err
	}
	return errors.Join(
		WriteFile(filepath.Join(etc, "resolv.conf"), resolv),
		WriteFile(filepath.Join(etc, "hosts"), hosts))
}

// RenderResolvConf returns n's resolv.conf. ndots:1 keeps single-label
// names (the VM's peers) on the search list; short timeouts keep a dead
// resolver from stalling every lookup for the libc default of 5 s × 2.
func RenderResolvConf(n *guestcfg.Network) ([]byte, error) {
	var b strings.Builder
	b.WriteString(header)
	if len(n.Search) > 0 {
		b.WriteString("search " + strings.Join(n.Search, " ") + "\n")
	}
	for _, d := range n.DNS {
		a, err := fileAddr(d)
		if err != nil {
			return nil, fmt.Errorf("resolv.conf: dns: %w", err)
		}
		b.WriteString("nameserver " + a + "\n")
	}
	b.WriteString("options ndots:1 timeout:2 attempts:2\n")
	return []byte(b.String()), nil
}

// RenderHosts returns n's hosts file. The ::1 line is left out with IPv6
// off, where it would name an address nothing listens on.
func RenderHosts(n *guestcfg.Network) ([]byte, error) {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("127.0.0.1 localhost\n")
	if n.IPv6 {
		b.WriteString("::1 localhost ip6-localhost ip6-loopback\n")
	}
	for _, h := range n.Hosts {
		a, err := fileAddr(h.IP)
		if err != nil {
			return nil, fmt.Errorf("hosts: %w", err)
		}
		b.WriteString(a + " " + strings.Join(h.Names, " ") + "\n")
	}
	return []byte(b.String()), nil
}

// fileAddr renders an address for resolv.conf or hosts. netip accepts any
// text as an IPv6 zone, and a zone with a space or newline would smuggle in
// lines of its own.
func fileAddr(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("%q: not an IP address", s)
	}
	if z := a.Zone(); len(z) > 15 || strings.ContainsFunc(z, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
	}) {
		return "", fmt.Errorf("%q: zone is not an interface name", s)
	}
	return a.String(), nil
}

// WriteFile replaces path with data, mode 0644, atomically: a temp file in
// the same directory renamed over it. rename(2) replaces a symlink at path
// rather than following it, so an image whose resolv.conf points into
// /run/systemd (or anywhere else) gets a real file and the target is left
// alone; the temp file is created with O_EXCL, which never follows one either.
func WriteFile(path string, data []byte) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	_, err = f.Write(data)
	if err == nil {
		// CreateTemp makes 0600; readers are unprivileged.
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Make the rename itself durable; best effort, the file is already right.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

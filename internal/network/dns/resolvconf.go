package dns

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// recheckInterval rate-limits stat calls on the query path; VPN
	// switches are rare, half a second of staleness is harmless.
	recheckInterval = 500 * time.Millisecond
	// maxNameservers matches the resolver limit in glibc (MAXNS).
	maxNameservers = 3
	// maxResolvConf guards against a huge or endless file.
	maxResolvConf = 64 << 10
)

// upstreams tracks the nameservers of the host's resolv.conf. It re-reads
// the file only when its identity (mtime, size, inode) changes, so tools
// that replace it by rename and those that rewrite in place are both seen.
type upstreams struct {
	path     string
	port     string
	self     []netip.Addr
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	loaded  bool
	checked time.Time
	id      fileID
	list    []string // "host:port"; replaced, never modified, so callers may keep it
}

type fileID struct {
	exists    bool
	mtimeNano int64
	size      int64
	dev, ino  uint64
}

func newUpstreams(path, port string, self []netip.Addr, log *slog.Logger) *upstreams {
	norm := make([]netip.Addr, 0, len(self))
	for _, a := range self {
		norm = append(norm, a.Unmap().WithZone(""))
	}
	return &upstreams{path: path, port: port, self: norm, log: log, interval: recheckInterval}
}

// servers returns the current upstream addresses, in resolv.conf order.
func (u *upstreams) servers() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	if u.loaded && now.Sub(u.checked) < u.interval {
		return u.list
	}
	u.checked = now
	id := statID(u.path)
	if u.loaded && id == u.id {
		return u.list
	}
	list, err := u.read()
	if changed := !u.loaded || !slices.Equal(list, u.list); err != nil {
		u.log.Warn("dns cannot read resolv.conf", "err", err, "servers", list)
	} else if changed {
		if len(list) == 0 {
			u.log.Warn("dns no usable nameserver in resolv.conf", "path", u.path)
		} else {
			u.log.Info("dns upstream servers", "path", u.path, "servers", list)
		}
	}
	u.loaded, u.id, u.list = true, id, list
	return list
}

func (u *upstreams) read() ([]string, error) {
	f, err := os.Open(u.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	list, err := parseResolvConf(io.LimitReader(f, maxResolvConf), u.port, u.isSelf)
	if err != nil {
		return list, fmt.Errorf("read %s: %w", u.path, err)
	}
	return list, nil
}

func (u *upstreams) isSelf(a netip.Addr) bool {
	return slices.Contains(u.self, a.Unmap().WithZone(""))
}

func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	id := fileID{exists: true, mtimeNano: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// parseResolvConf returns up to three usable "nameserver" entries as
// "host:port". Unspecified addresses and our own (skip) are dropped, since
// forwarding to them would loop back to us.
func parseResolvConf(r io.Reader, port string, skip func(netip.Addr) bool) ([]string, error) {
	var list []string
	sc := bufio.NewScanner(r)
	for sc.Scan() && len(list) < maxNameservers {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		addr, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		if addr.IsUnspecified() || (skip != nil && skip(addr)) {
			continue
		}
		hp := net.JoinHostPort(addr.String(), port)
		if !slices.Contains(list, hp) {
			list = append(list, hp)
		}
	}
	return list, sc.Err()
}

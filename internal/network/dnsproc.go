package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The DNS server of a bridged network runs as its own small background
// process (the CLI re-executed: `mvmctl network dns-serve NAME`), started on
// the network's first use and ended by `network rm`. Its pid file holds the
// pid and the process start time, so a recycled pid is never signalled.

// DNSPidFile is where a network's DNS server records itself.
func (m *Manager) DNSPidFile(name string) string { return filepath.Join(m.RunDir, name+".dns.pid") }

// DNSLogFile is the DNS server's log.
func (m *Manager) DNSLogFile(name string) string { return filepath.Join(m.RunDir, name+".dns.log") }

// WriteDNSPid records the calling process as name's DNS server.
func (m *Manager) WriteDNSPid(name string) error {
	if err := os.MkdirAll(m.RunDir, 0o700); err != nil {
		return err
	}
	st, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(m.DNSPidFile(name), fmt.Appendf(nil, "%d %s\n", os.Getpid(), st), 0o600)
}

// dnsPid returns the live DNS server's pid, or 0.
func (m *Manager) dnsPid(name string) int {
	b, err := os.ReadFile(m.DNSPidFile(name))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0
	}
	if st, err := procStart(pid); err != nil || st != f[1] {
		return 0
	}
	return pid
}

func (m *Manager) dnsAlive(name string) bool { return m.dnsPid(name) != 0 }

// DNSRunning reports whether name's DNS server runs (for inspect, doctor).
func (m *Manager) DNSRunning(name string) bool { return m.dnsAlive(name) }

// stopDNS ends name's DNS server and waits briefly for it to go.
func (m *Manager) stopDNS(name string) {
	pid := m.dnsPid(name)
	if pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 100 && m.dnsPid(name) != 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if m.dnsPid(name) != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	os.Remove(m.DNSPidFile(name))
}

// procStart is field 22 of /proc/PID/stat: the start time in clock ticks.
func procStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errors.New("malformed /proc stat")
	}
	return f[19], nil
}

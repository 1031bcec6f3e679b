package security

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procStatus is what /proc/<pid>/status says about a process's privileges.
type procStatus struct {
	// UID and GID are real, effective, saved and filesystem ids.
	UID, GID [4]int
	// Seccomp is the seccomp mode: 0 none, 1 strict, 2 filter; -1 when
	// the kernel does not report it.
	Seccomp int
	// NoNewPrivs is 1 when no_new_privs is set; -1 when not reported.
	NoNewPrivs int
	// CapEff is the effective capability set.
	CapEff uint64
}

// root reports whether any of the process's uids is 0: a saved uid 0 can
// become the effective one again.
func (s procStatus) root() bool {
	for _, u := range s.UID {
		if u == 0 {
			return true
		}
	}
	return false
}

// readProcStatus parses <root>/<pid>/status.
func readProcStatus(root string, pid int) (procStatus, error) {
	st := procStatus{Seccomp: -1, NoNewPrivs: -1}
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "status"))
	if err != nil {
		return st, err
	}
	var haveUID, haveGID bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Uid":
			if st.UID, err = parseIDs(val); err != nil {
				return st, fmt.Errorf("process %d: Uid: %w", pid, err)
			}
			haveUID = true
		case "Gid":
			if st.GID, err = parseIDs(val); err != nil {
				return st, fmt.Errorf("process %d: Gid: %w", pid, err)
			}
			haveGID = true
		case "Seccomp":
			if st.Seccomp, err = strconv.Atoi(val); err != nil {
				return st, fmt.Errorf("process %d: Seccomp: %w", pid, err)
			}
		case "NoNewPrivs":
			if st.NoNewPrivs, err = strconv.Atoi(val); err != nil {
				return st, fmt.Errorf("process %d: NoNewPrivs: %w", pid, err)
			}
		case "CapEff":
			if st.CapEff, err = strconv.ParseUint(val, 16, 64); err != nil {
				return st, fmt.Errorf("process %d: CapEff: %w", pid, err)
			}
		}
	}
	if !haveUID || !haveGID {
		return st, fmt.Errorf("process %d: status has no Uid or Gid line", pid)
	}
	return st, nil
}

func parseIDs(s string) ([4]int, error) {
	var ids [4]int
	f := strings.Fields(s)
	if len(f) != 4 {
		return ids, fmt.Errorf("want 4 ids, got %q", s)
	}
	for i, v := range f {
		n, err := strconv.Atoi(v)
		if err != nil {
			return ids, err
		}
		ids[i] = n
	}
	return ids, nil
}

// procStartTime returns the start time (field 22) of <root>/<pid>/stat,
// which with the pid names one process: supervisor.Proc records both so a
// recycled pid is never mistaken for the VMM. Zombies are not running.
func procStartTime(root string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	if s := string(f[0]); s == "Z" || s == "X" {
		return 0, errors.New("process is a zombie")
	}
	return strconv.ParseUint(string(f[19]), 10, 64)
}

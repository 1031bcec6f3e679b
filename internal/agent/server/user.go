package server

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// account is who an exec runs as.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
}

// dbEntry is one line of /etc/passwd or /etc/group split on ':'.
type dbEntry []string

// maxDBSize bounds what we read of /etc/passwd and /etc/group.
const maxDBSize = 4 << 20

// parseDB parses colon-separated lines with at least minFields fields,
// skipping comments and malformed lines (as libc does).
func parseDB(r io.Reader, minFields int) []dbEntry {
	var out []dbEntry
	sc := bufio.NewScanner(io.LimitReader(r, maxDBSize))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < minFields || f[0] == "" {
			continue
		}
		out = append(out, f)
	}
	return out
}

func readDB(path string, minFields int) ([]dbEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseDB(f, minFields), nil
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// lookupUser resolves "name", "uid", "name:group" or "uid:gid" (group by name
// or number). A numeric uid without a passwd entry runs with gid=uid and home /.
func lookupUser(spec, passwdPath, groupPath string) (*account, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return nil, fmt.Errorf("invalid user %q", spec)
	}
	users, err := readDB(passwdPath, 7)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read %s: %w", passwdPath, err)
	}
	acct := &account{home: "/"}
	uid, numeric := parseID(userPart)
	found := false
	for _, u := range users {
		if (numeric && u[2] == userPart) || (!numeric && u[0] == userPart) {
			id, ok1 := parseID(u[2])
			gid, ok2 := parseID(u[3])
			if !ok1 || !ok2 {
				continue
			}
			acct.name, acct.uid, acct.gid, acct.home = u[0], id, gid, u[5]
			found = true
			break
		}
	}
	if !found {
		if !numeric {
			return nil, fmt.Errorf("user %q not found in %s", userPart, passwdPath)
		}
		acct.uid, acct.gid = uid, uid
	}
	if acct.home == "" {
		acct.home = "/"
	}

	groups, err := readDB(groupPath, 3)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read %s: %w", groupPath, err)
	}
	if hasGroup {
		gid, ok := parseID(groupPart)
		if !ok {
			for _, g := range groups {
				if g[0] == groupPart {
					gid, ok = parseID(g[2])
					break
				}
			}
			if !ok {
				return nil, fmt.Errorf("group %q not found in %s", groupPart, groupPath)
			}
		}
		acct.gid = gid
	}
	// Supplementary groups as initgroups(3) would set them; always replaced,
	// so root's groups never leak into an unprivileged exec.
	acct.groups = []uint32{acct.gid}
	if acct.name != "" {
		for _, g := range groups {
			if len(g) < 4 || !slices.Contains(strings.Split(g[3], ","), acct.name) {
				continue
			}
			if gid, ok := parseID(g[2]); ok && !slices.Contains(acct.groups, gid) {
				acct.groups = append(acct.groups, gid)
			}
		}
	}
	return acct, nil
}

func (a *account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}

// homeOf returns the home directory of uid from passwdPath, or "" if unknown.
func homeOf(uid int, passwdPath string) string {
	users, _ := readDB(passwdPath, 7)
	for _, u := range users {
		if u[2] == strconv.Itoa(uid) {
			return u[5]
		}
	}
	return ""
}

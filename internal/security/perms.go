package security

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mvm-dev/mvm/internal/audit"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// Files in a VM directory these checks look at. The vm package owns
// vm.json, guest.pub (internal/vm/keys.go guestPinFile) and config.img
// (internal/vm/manager.go configDriveFile); the backend owns backend.json.
const (
	recordFile      = "vm.json"
	guestPinFile    = "guest.pub"
	configDriveFile = "config.img"
)

// level is how private a path must be.
type level int

const (
	// shared paths may be read by others (the image cache, 0755) but
	// never written.
	shared level = iota
	// private paths are 0700 directories and 0600 files: one open to
	// reading is a warning, to writing a failure.
	private
	// secret paths hold a private key: open to reading is a failure.
	secret
)

// pathRule is one path to inspect.
type pathRule struct {
	path  string
	what  string // "state directory", "VM record"...
	level level
	dir   bool
	// follow: stat through a symlink (roots the user may have linked
	// elsewhere); entries inside VM directories are never links.
	follow bool
}

// inspect checks one path. It returns whether the path exists, and the
// finding when something is wrong with it (nil when it is fine).
func inspect(r pathRule, euid int, name string) (bool, *Check) {
	stat := os.Lstat
	if r.follow {
		stat = os.Stat
	}
	fi, err := stat(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	bad := func(s Status, detail, fix string) (bool, *Check) {
		return true, &Check{Status: s, Check: name, Detail: r.what + " " + r.path + ": " + detail, Fix: fix}
	}
	if err != nil {
		return bad(Warn, "cannot inspect: "+err.Error(), "ls -ld "+filepath.Dir(r.path)+" and make it readable by you")
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return bad(Fail, "is a symbolic link; mvmctl never makes one here", "remove it and let mvmctl recreate the file: "+rmHint(r))
	case r.dir && !fi.IsDir():
		return bad(Fail, "is not a directory", "move it aside; mvmctl recreates it")
	case !r.dir && !fi.Mode().IsRegular():
		return bad(Fail, "is not a regular file", "move it aside")
	}
	if uid, ok := ownerOf(fi); ok && uid != euid {
		return bad(Fail, fmt.Sprintf("owned by uid %d, not by you (uid %d): its owner can change it", uid, euid),
			fmt.Sprintf("chown %d %s (or set MVM_*_DIR to directories of your own)", euid, r.path))
	}
	perm := fi.Mode().Perm()
	want, wantText := fs.FileMode(0o600), "600"
	if r.dir {
		want, wantText = 0o700, "700"
	}
	switch {
	case perm&0o022 != 0:
		fix := "chmod go-w " + r.path
		if r.level != shared {
			fix = "chmod " + wantText + " " + r.path
		}
		return bad(Fail, fmt.Sprintf("writable by group or others (mode %#o): they can replace what mvmctl reads from it", perm), fix)
	case r.level == secret && perm&0o077 != 0:
		return bad(Fail, fmt.Sprintf("readable by group or others (mode %#o), and it holds a private key", perm), "chmod 600 "+r.path)
	case r.level == private && perm&0o077 != 0:
		return bad(Warn, fmt.Sprintf("open to group or others (mode %#o); mvmctl makes it %#o", perm, want), "chmod "+wantText+" "+r.path)
	}
	return true, nil
}

func rmHint(r pathRule) string {
	if r.dir {
		return "rmdir " + r.path
	}
	return "rm " + r.path
}

// ownerOf returns the owner of fi when the platform says.
func ownerOf(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// vmDir is the directory of a VM record.
func (e *Env) vmDir(rec *store.Record) string {
	if rec.Dir != "" {
		return rec.Dir
	}
	return filepath.Join(e.Dirs.VMsDir(), rec.Name)
}

// checkPermissions: mvm's directories and each VM's directory are not
// writable by group or others, and records are 0600. The config directory
// and the keys are checkAgentAuth's.
func checkPermissions(e *Env) []Check {
	const name = "permissions"
	var rules []pathRule
	root := func(p, what string, lv level) {
		if p != "" {
			rules = append(rules, pathRule{path: p, what: what, level: lv, dir: true, follow: true})
		}
	}
	root(e.Dirs.State, "state directory", private)
	root(e.Dirs.Share, "share directory", private)
	root(e.Dirs.Cache, "cache directory", shared)
	if e.Dirs.State != "" {
		root(e.Dirs.VMsDir(), "VMs directory", private)
		root(audit.Dir(e.Dirs.State), "audit directory", private)
		root(filepath.Join(e.Dirs.State, "networks"), "network runtime directory", private)
	}
	if e.Dirs.Share != "" {
		netDir := filepath.Join(e.Dirs.Share, "networks")
		root(netDir, "networks directory", private)
		for _, n := range e.Networks {
			rules = append(rules, pathRule{path: filepath.Join(netDir, n.Name+".json"), what: "network record", level: private})
		}
	}
	if e.Dirs.State != "" {
		dir := audit.Dir(e.Dirs.State)
		if files, err := audit.Files(dir); err == nil {
			for _, f := range files {
				rules = append(rules, pathRule{path: filepath.Join(dir, f), what: "audit file", level: private})
			}
		}
	}
	for _, rec := range e.VMs {
		dir := e.vmDir(rec)
		rules = append(rules,
			pathRule{path: dir, what: "VM directory", level: private, dir: true},
			pathRule{path: filepath.Join(dir, recordFile), what: "VM record", level: private},
			pathRule{path: filepath.Join(dir, backend.RecordFile), what: "backend record", level: private},
			pathRule{path: filepath.Join(dir, configDriveFile), what: "config drive (holds the guest's private key)", level: secret},
		)
	}
	var out []Check
	dirs, files := 0, 0
	for _, r := range rules {
		exists, c := inspect(r, e.Euid, name)
		if c != nil {
			out = append(out, *c)
		}
		switch {
		case !exists:
		case r.dir:
			dirs++
		default:
			files++
		}
	}
	if len(out) == 0 {
		var what []string
		if dirs > 0 {
			what = append(what, plural(dirs, "directory", "directories"))
		}
		if files > 0 {
			what = append(what, plural(files, "file", "files"))
		}
		if len(what) == 0 {
			return []Check{{Status: Info, Check: name, Detail: "nothing to check yet: mvm has not created its directories"}}
		}
		return []Check{{Status: Pass, Check: name,
			Detail: strings.Join(what, " and ") + " checked: none writable by group or others; state, VM directories and records private to you (0700/0600)"}}
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

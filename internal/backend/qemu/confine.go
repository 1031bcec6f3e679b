package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/paths"
)

// How QEMU is confined.
//
// QEMU parses everything the guest controls (device emulation, the TCG
// translator, the migration stream of a snapshot), so the host treats it as
// exposed: it runs under QEMU's seccomp filter (-sandbox), and, when mvmctl
// runs as root, as an unprivileged user (-runas).
//
// The filter denies obsolete system calls, fork/exec (spawn: TAPs are
// opened with script=no, chardev sockets come as descriptors, migration
// goes to descriptors, so QEMU never runs a program) and scheduler and
// resource controls. elevateprivileges=deny also denies set*uid/set*gid,
// and QEMU installs the filter before -runas switches user, so the two
// cannot be combined: the filter would kill QEMU at its own setuid (as it
// would with elevateprivileges=children). With -runas it is therefore
// elevateprivileges=allow, which gives nothing back: root's setuid to
// another uid sets the real, effective and saved ids, drops every
// capability, and the filter sets no_new_privs, so nothing can raise them
// again.
//
// QEMU switches user once it has set up its devices, so every file it
// opens (kernel, initrd, disks, the RAM file, TAPs, the QMP socket, the
// pid file) is opened as root; what it gets later (snapshot state, by
// descriptor over QMP) needs no access of its own. At exit it cannot
// delete its pid file and QMP socket any more, so the supervisor does. The
// switch also clears the parent-death signal that kills QEMU with its
// supervisor; the supervisor's VMM guard (supervisor.Config.VMMGuard) does
// that instead.
//
// Except one file: a -drive's file is "auto-read-only" by default, so QEMU
// reopens it, by name, read-only when no writer needs it and read-write
// when one does again. Saving a snapshot deactivates the drives (the
// migration hands them over) and resuming reactivates them; a clone's
// drives start inactive. A QEMU that has dropped privileges cannot open
// the VM's files (root's, in root's directories), so the migration fails
// ("bdrv_inactivate_all() failed"). Such a QEMU gets its writable drives
// with file.auto-read-only=off: opened read-write once, at start, and kept.
//
// A QEMU whose seccomp support is missing (built without it, or a kernel
// without seccomp filters) still runs the VM, without -sandbox, and the
// reason is recorded in the launch in the VM's backend record
// (Confinement.Notes); ConfinementStatus tells doctor the same.

const (
	// sandboxDeny is the filter for a QEMU that keeps mvmctl's user.
	sandboxDeny = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
	// sandboxRunAs is the filter for a QEMU that switches user (-runas)
	// after installing it; see above for elevateprivileges=allow.
	sandboxRunAs = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"

	// QEMUUser is the account QEMU runs as under a root mvmctl when it
	// exists (an administrator may create it to choose the ids).
	QEMUUser = "mvm-qemu"
	// defaultQEMUID is the uid and gid QEMU runs as under a root mvmctl
	// without a QEMUUser account: one no account uses, so no other process
	// shares it ("mvm" in ASCII, outside the ranges Debian allocates to
	// packages; 64055 is Debian's libvirt-qemu).
	defaultQEMUID = 0x6d766d
	// nobodyID is the fallback when defaultQEMUID belongs to an account.
	nobodyID = 65534

	// probeTimeout bounds one probe of QEMU's seccomp support; QEMU with
	// no machine starts and quits in tens of milliseconds.
	probeTimeout = 10 * time.Second
)

// Confinement is how a VM's QEMU is confined, recorded in its launch.
type Confinement struct {
	// Sandbox is the -sandbox value; empty: QEMU runs without seccomp.
	Sandbox string `json:"sandbox,omitempty"`
	// RunAs is the -runas value, "uid:gid"; empty: QEMU keeps mvmctl's user.
	RunAs string `json:"runas,omitempty"`
	// Notes say why either is missing or differs from the default.
	Notes []string `json:"notes,omitempty"`
}

// keepReadWrite is the -drive option that keeps a writable drive's file
// open read-write for QEMU's whole life (see above).
const keepReadWrite = ",file.auto-read-only=off"

// dropsPrivileges says whether QEMU switches to another user.
func (c *Confinement) dropsPrivileges() bool { return c != nil && c.RunAs != "" }

// args renders c as QEMU options.
func (c *Confinement) args() []string {
	if c == nil {
		return nil
	}
	var a []string
	if c.Sandbox != "" {
		a = append(a, "-sandbox", c.Sandbox)
	}
	if c.RunAs != "" {
		a = append(a, "-runas", c.RunAs)
	}
	return a
}

// confineFlags are the options Confinement.args renders. They, and
// keepReadWrite, are about the host process, not the machine, so two argvs
// that differ only in them build the same machine (a snapshot of an
// unconfined VM restores into a confined one, and one saved by root into a
// clone started by a user).
var confineFlags = map[string]bool{"-sandbox": true, "-runas": true}

// withoutConfinement returns argv without what confinement adds to it.
func withoutConfinement(argv []string) []string {
	out := make([]string, 0, len(argv))
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case i == 0:
		case confineFlags[a]:
			i++
			continue
		case a == "-drive" && i+1 < len(argv):
			i++
			out = append(out, a, strings.TrimSuffix(argv[i], keepReadWrite))
			continue
		}
		out = append(out, a)
	}
	return out
}

// ConfinementStatus reports how Start would confine QEMU on this host, for
// doctor and security status.
func ConfinementStatus(ctx context.Context) Confinement {
	a, ok := arches[runtime.GOARCH]
	if !ok {
		return Confinement{Notes: []string{"unsupported host architecture " + runtime.GOARCH}}
	}
	return *confinementFor(ctx, a.Binary)
}

// confinementFor decides how to confine the QEMU at bin: as root, run it as
// the QEMU user; always under the seccomp filter, unless this QEMU cannot
// install it, which a probe finds out (and what it says is noted).
func confinementFor(ctx context.Context, bin string) *Confinement {
	c := &Confinement{Sandbox: sandboxDeny}
	if os.Geteuid() == 0 {
		uid, gid, note := qemuIDs()
		c.RunAs = strconv.Itoa(uid) + ":" + strconv.Itoa(gid)
		c.Sandbox = sandboxRunAs
		if note != "" {
			c.Notes = append(c.Notes, note)
		}
	}
	err := probeQEMU(ctx, bin, c.Sandbox, c.RunAs)
	if err == nil {
		return c
	}
	// Without -runas the probe still fails: that is no seccomp matter, and
	// the VM's own start reports it in QEMU's words.
	if c.RunAs != "" && probeQEMU(ctx, bin, "", c.RunAs) != nil {
		return c
	}
	c.Notes = append(c.Notes, "no seccomp sandbox: "+err.Error())
	c.Sandbox = ""
	return c
}

// qemuIDs picks the uid and gid QEMU drops to under a root mvmctl: the
// QEMUUser account's, else defaultQEMUID unless an account or group has
// it, else nobody's. The note says why when it is not defaultQEMUID.
func qemuIDs() (uid, gid int, note string) {
	if u, err := user.Lookup(QEMUUser); err == nil {
		uid, uerr := strconv.Atoi(u.Uid)
		gid, gerr := strconv.Atoi(u.Gid)
		if uerr == nil && gerr == nil && uid != 0 && gid != 0 {
			return uid, gid, fmt.Sprintf("QEMU runs as the %s account (%d:%d)", QEMUUser, uid, gid)
		}
		return nobodyID, nobodyID, fmt.Sprintf("the %s account has uid %q, gid %q; QEMU runs as nobody instead", QEMUUser, u.Uid, u.Gid)
	}
	id := strconv.Itoa(defaultQEMUID)
	if u, err := user.LookupId(id); err == nil {
		return nobodyID, nobodyID, fmt.Sprintf("uid %s belongs to %s; QEMU runs as nobody (create a %s account to choose)", id, u.Username, QEMUUser)
	}
	if g, err := user.LookupGroupId(id); err == nil {
		return nobodyID, nobodyID, fmt.Sprintf("gid %s belongs to group %s; QEMU runs as nobody (create a %s account to choose)", id, g.Name, QEMUUser)
	}
	return defaultQEMUID, defaultQEMUID, ""
}

// probes caches probeQEMU's answers by binary (path, size and mtime) and
// options: a process starting many VMs asks once.
var probes sync.Map

// probeQEMU starts bin with the given -sandbox and -runas options and no
// machine, and has it quit over QMP on stdin. It fails with QEMU's own
// words when QEMU cannot start so.
func probeQEMU(ctx context.Context, bin, sandbox, runAs string) error {
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("probe %s: %w", bin, err)
	}
	key := path + "\x00" + sandbox + "\x00" + runAs + "\x00" + strconv.Itoa(os.Geteuid())
	if fi, err := os.Stat(path); err == nil {
		key += "\x00" + strconv.FormatInt(fi.Size(), 10) + "\x00" + fi.ModTime().String()
	}
	if v, ok := probes.Load(key); ok {
		if v == nil {
			return nil
		}
		return v.(error)
	}
	if probeRemembered(key) {
		probes.Store(key, nil)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	opts := (&Confinement{Sandbox: sandbox, RunAs: runAs}).args()
	argv := append([]string{"-M", "none", "-display", "none", "-nodefaults", "-no-user-config", "-qmp", "stdio"}, opts...)
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		probes.Store(key, nil)
		rememberProbe(key)
		return nil
	}
	if ctx.Err() != nil {
		// Not cached: a busy host may answer the next time.
		return fmt.Errorf("probe %s: %w", path, ctx.Err())
	}
	why := strings.TrimSpace(stderr.String())
	if i := strings.IndexByte(why, '\n'); i >= 0 {
		why = why[:i]
	}
	if why == "" {
		why = err.Error()
	} else {
		why += " (" + err.Error() + ")"
	}
	err = fmt.Errorf("%s %s: %s", path, strings.Join(opts, " "), why)
	probes.Store(key, err)
	return err
}

// A successful probe is also remembered on disk, so each `mvmctl up` (a new
// process) does not pay another QEMU start for it (~80 ms under TCG).
// Only successes are: a remembered failure would turn confinement off on
// the word of a file, while a stale success merely makes QEMU refuse to
// start, which names the option. The key holds the binary's size and mtime,
// so an upgraded QEMU is probed again.
func probeFile(key string) string {
	d, err := paths.Resolve()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(d.Cache, "probes", "qemu-"+hex.EncodeToString(sum[:8]))
}

func probeRemembered(key string) bool {
	p := probeFile(key)
	if p == "" {
		return false
	}
	b, err := os.ReadFile(p)
	return err == nil && string(b) == key
}

func rememberProbe(key string) {
	p := probeFile(key)
	if p == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d", p, os.Getpid())
	if os.WriteFile(tmp, []byte(key), 0o600) == nil {
		_ = os.Rename(tmp, p)
	}
}

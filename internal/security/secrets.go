package security

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/audit"
)

// checkSecrets: which VMs were given secrets (names only: the host keeps
// no value anywhere).
func checkSecrets(e *Env) []Check {
	var held []string
	for _, rec := range e.VMs {
		if len(rec.Secrets) == 0 {
			continue
		}
		s := rec.Name + " (" + strings.Join(rec.Secrets, ", ") + ")"
		if !active(rec) {
			s += " [" + rec.State + ": asked for again at start]"
		}
		held = append(held, s)
	}
	if len(held) == 0 {
		return []Check{{Status: Info, Check: "secrets", Detail: "no VM was given secrets"}}
	}
	return []Check{{Status: Info, Check: "secrets",
		Detail: "VMs holding secrets: " + strings.Join(held, "; ") +
			"; values live in the guest's tmpfs /run/secrets only, never on the host's disks or in records, and 'snapshot create' refuses these VMs without --drop-secrets"}}
}

// checkGuestRAM: QEMU maps guest RAM from a file so snapshots can copy it;
// internal/backend/qemu puts it in /dev/shm so its pages (the guest's
// secrets among them) never reach a disk, else in the VM directory. Pass
// when /dev/shm is a tmpfs; each running VM whose own RAM file is on a
// disk is a warning.
func checkGuestRAM(e *Env) []Check {
	const name = "guest RAM on tmpfs"
	shm := e.shmDir()
	var out []Check
	t, err := e.statfs(shm)
	switch {
	case err != nil:
		out = append(out, Check{Status: Warn, Check: name,
			Detail: fmt.Sprintf("%s: %v; QEMU then keeps guest RAM in a file in the VM directory, on disk", shm, err),
			Fix:    "mount a tmpfs on " + shm + " (mount -t tmpfs tmpfs " + shm + ")"})
	case t != tmpfsMagic:
		out = append(out, Check{Status: Warn, Check: name,
			Detail: fmt.Sprintf("%s is not a tmpfs (filesystem type %#x): guest RAM files there reach the disk, secrets in guest tmpfs included", shm, t),
			Fix:    "mount a tmpfs on " + shm + " (mount -t tmpfs tmpfs " + shm + ")"})
	default:
		out = append(out, Check{Status: Pass, Check: name,
			Detail: shm + " is a tmpfs: QEMU VMs' RAM files there never reach a disk (except through swap)"})
	}
	for _, v := range e.qemuVMs() {
		if !v.running() || v.brec == nil || v.brec.Launch == nil || v.brec.Launch.MemPath == "" {
			continue
		}
		l := v.brec.Launch
		if !l.MemShare {
			// A clone maps its snapshot's file private: what it writes
			// lives in anonymous memory, the file is never written.
			continue
		}
		t, err := e.statfs(filepath.Dir(l.MemPath))
		if err == nil && t == tmpfsMagic {
			continue
		}
		d := fmt.Sprintf("VM %s keeps its RAM in %s, which is on a disk", v.rec.Name, l.MemPath)
		if err != nil {
			d = fmt.Sprintf("VM %s keeps its RAM in %s (%v)", v.rec.Name, l.MemPath, err)
		}
		if len(v.rec.Secrets) > 0 {
			d += ", and it holds secrets"
		}
		out = append(out, Check{Status: Warn, Check: name + ": " + v.rec.Name, Detail: d,
			Fix: "mount a tmpfs on " + shm + ", then mvmctl restart " + v.rec.Name})
	}
	return out
}

// checkAudit: the trail's hash chain verifies. A broken chain fails; no
// trail yet is a warning.
func checkAudit(e *Env) []Check {
	const name = "audit trail"
	if e.Dirs.State == "" {
		return []Check{{Status: Warn, Check: name, Detail: "no state directory resolved", Fix: "set HOME or MVM_STATE_DIR"}}
	}
	dir := audit.Dir(e.Dirs.State)
	sum, err := audit.Verify(dir)
	var ve *audit.VerifyError
	switch {
	case errors.As(err, &ve):
		return []Check{{Status: Fail, Check: name,
			Detail: fmt.Sprintf("chain broken: %v (%d good records before it): a record was edited, removed, inserted or truncated", ve, sum.Records),
			Fix:    "'mvmctl audit verify' names the line; keep a copy of " + dir + " and find out who could write it"}}
	case err != nil:
		return []Check{{Status: Warn, Check: name, Detail: "cannot verify: " + err.Error(), Fix: "mvmctl audit verify"}}
	case sum.Records == 0:
		return []Check{{Status: Warn, Check: name, Detail: "no audit trail yet in " + dir + ": it starts with the first state-changing command (up, rm, network create...)",
			Fix: "nothing to do; run 'mvmctl audit verify' after using mvmctl"}}
	}
	return []Check{{Status: Pass, Check: name,
		Detail: fmt.Sprintf("%s: %s in %s, hash chain intact (removing lines from the very end cannot be detected)", dir, plural(sum.Records, "record", "records"), plural(sum.Files, "file", "files"))}}
}

package security

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// qemuRecord is the part of a QEMU VM's backend.json (internal/backend/qemu:
// record in state.go, launch in argv.go) these checks read.
type qemuRecord struct {
	Backend string `json:"backend"`
	Accel   string `json:"accel"`
	Launch  *struct {
		KVM      bool
		MemPath  string
		MemShare bool
		// Confine is what was asked for and why something was left
		// out; nil in launches from before QEMU was confined.
		Confine *qemu.Confinement
	} `json:"launch"`
}

// qemuVM is one QEMU VM as the checks see it.
type qemuVM struct {
	rec    *store.Record
	brec   *qemuRecord // nil when backend.json cannot be read (brecErr)
	brecEr error
	// pid is the VMM's when it runs (pids.json, confirmed by its start
	// time in /proc); 0 otherwise.
	pid      int
	status   procStatus
	statusEr error
}

func (v *qemuVM) running() bool { return v.pid > 0 }

// confine is what the launch asked for; nil when unknown.
func (v *qemuVM) confine() *qemu.Confinement {
	if v.brec == nil || v.brec.Launch == nil {
		return nil
	}
	return v.brec.Launch.Confine
}

// qemuVMs returns the QEMU VMs with their records and running VMMs.
func (e *Env) qemuVMs() []*qemuVM {
	if e.qemuDone {
		return e.qemuCache
	}
	e.qemuDone = true
	for _, rec := range e.VMs {
		if rec.Backend != qemu.Name {
			continue
		}
		dir := e.vmDir(rec)
		v := &qemuVM{rec: rec}
		var br qemuRecord
		if err := backend.LoadRecord(dir, qemu.Name, &br); err != nil {
			v.brecEr = err
		} else {
			v.brec = &br
		}
		if p, err := supervisor.ReadPids(dir); err == nil && p.VMM.Pid > 0 {
			if start, err := procStartTime(e.procRoot(), p.VMM.Pid); err == nil && start == p.VMM.Start {
				v.pid = p.VMM.Pid
				v.status, v.statusEr = readProcStatus(e.procRoot(), v.pid)
			}
		}
		e.qemuCache = append(e.qemuCache, v)
	}
	return e.qemuCache
}

// checkQEMUHost: how a new VM's QEMU would be confined and accelerated.
func checkQEMUHost(e *Env) []Check {
	q := e.Host.QEMU
	if q == nil {
		why := e.Host.QEMUMissing
		if why == "" {
			why = "not probed"
		}
		return []Check{{Status: Info, Check: "qemu confinement (new VMs)", Detail: "QEMU is not available (" + why + "); no QEMU VM can start here"}}
	}
	c := q.Confine
	conf := Check{Check: "qemu confinement (new VMs)"}
	who := "as your uid " + strconv.Itoa(e.Euid)
	if c.RunAs != "" {
		who = "as uid:gid " + c.RunAs + " (-runas), not root"
	}
	switch {
	case c.Sandbox != "" && (e.Euid != 0 || c.RunAs != ""):
		conf.Status = Pass
		conf.Detail = "QEMU runs under its seccomp filter (-sandbox " + c.Sandbox + ") " + who
	case e.Euid == 0 && c.RunAs == "":
		conf.Status = Fail
		conf.Detail = "QEMU would run as root"
		if c.Sandbox == "" {
			conf.Detail += " without a seccomp filter"
		}
		conf.Fix = "update mvmctl: a root mvmctl always runs QEMU with -runas"
	default:
		conf.Status = Warn
		conf.Detail = "QEMU runs without a seccomp filter, " + who
		conf.Fix = "install a QEMU built with seccomp support (Debian's qemu-system-* is) on a kernel with CONFIG_SECCOMP_FILTER; 'mvmctl doctor' shows the probe"
	}
	if len(c.Notes) > 0 {
		conf.Detail += "; " + strings.Join(c.Notes, "; ")
	}
	accel := Check{Status: Info, Check: "accelerator (new VMs)"}
	switch q.Accel {
	case "kvm":
		accel.Detail = "KVM (" + q.AccelReason + "): the guest runs on the host CPU through the kernel's KVM interface; QEMU's sandbox matters the more"
	default:
		accel.Detail = "TCG software emulation (KVM: " + q.AccelReason + "): slower, not weaker for the host; the guest reaches no KVM interface"
	}
	return []Check{conf, accel}
}

// checkConfinement: each running QEMU VM's VMM, as /proc shows it, against
// what its launch asked for. A QEMU that runs as root without seccomp fails.
func checkConfinement(e *Env) []Check {
	var out []Check
	for _, v := range e.qemuVMs() {
		if !v.running() {
			continue
		}
		out = append(out, confinementCheck(v, e.Euid))
	}
	return out
}

func confinementCheck(v *qemuVM, euid int) Check {
	name := v.rec.Name
	c := Check{Check: "vmm confinement: " + name}
	restart := "mvmctl restart " + name
	if v.statusEr != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("QEMU pid %d: cannot read its status: %v", v.pid, v.statusEr)
		c.Fix = "run mvmctl security status as the user who started the VM, or as root"
		return c
	}
	st := v.status
	seccomp := st.Seccomp == 2
	var facts []string
	switch st.Seccomp {
	case 2:
		facts = append(facts, "seccomp filter (mode 2)")
	case -1:
		facts = append(facts, "seccomp not reported by the kernel")
	default:
		facts = append(facts, fmt.Sprintf("no seccomp filter (mode %d)", st.Seccomp))
	}
	if st.root() {
		facts = append(facts, fmt.Sprintf("uid %d/%d/%d (root)", st.UID[0], st.UID[1], st.UID[2]))
	} else {
		facts = append(facts, fmt.Sprintf("uid %d, gid %d", st.UID[1], st.GID[1]))
	}
	facts = append(facts, "no_new_privs "+strconv.Itoa(st.NoNewPrivs))
	if st.CapEff == 0 {
		facts = append(facts, "no capabilities")
	} else {
		facts = append(facts, fmt.Sprintf("capabilities %#x", st.CapEff))
	}
	detail := fmt.Sprintf("QEMU pid %d: %s", v.pid, strings.Join(facts, ", "))
	asked := v.confine()
	switch {
	case v.brec == nil:
		detail += fmt.Sprintf("; launch record unreadable (%v)", v.brecEr)
	case asked == nil:
		detail += "; launched by an mvmctl that did not confine QEMU yet"
	default:
		var a []string
		if asked.Sandbox != "" {
			a = append(a, "-sandbox "+asked.Sandbox)
		}
		if asked.RunAs != "" {
			a = append(a, "-runas "+asked.RunAs)
		}
		if len(a) == 0 {
			a = append(a, "no confinement")
		}
		detail += "; launch asked for " + strings.Join(a, " ")
		if len(asked.Notes) > 0 {
			detail += " (" + strings.Join(asked.Notes, "; ") + ")"
		}
		if asked.RunAs != "" && !st.root() {
			if want, _, _ := strings.Cut(asked.RunAs, ":"); want != strconv.Itoa(st.UID[1]) {
				detail += "; but runs as uid " + strconv.Itoa(st.UID[1])
			}
		}
	}
	c.Detail = detail
	switch {
	case st.root() && !seccomp:
		c.Status = Fail
		c.Detail += ": a QEMU escape is root on the host"
		c.Fix = restart + " (this mvmctl confines QEMU: seccomp, and -runas when root); if it stays unconfined see 'mvmctl doctor' (qemu confinement)"
	case st.root():
		c.Status = Warn
		c.Detail += ": runs as root, only the filter stands between a QEMU escape and the host"
		c.Fix = restart + " (a root mvmctl runs QEMU as an unprivileged uid)"
	case !seccomp:
		c.Status = Warn
		c.Fix = "install a QEMU with seccomp support, then " + restart
		if euid != 0 && st.UID[1] == euid {
			c.Detail += ": a QEMU escape has your uid"
		}
	case st.NoNewPrivs != 1:
		c.Status = Warn
		c.Detail += ": no_new_privs is not set, so a setuid binary could raise its privileges"
		c.Fix = restart
	default:
		c.Status = Pass
	}
	return c
}

// checkAccelerator: KVM or TCG per QEMU VM; KVM without the sandbox is a
// warning (the guest drives the host kernel's KVM code through an
// unfiltered QEMU).
func checkAccelerator(e *Env) []Check {
	var out []Check
	var facts []string
	tcg := false
	for _, v := range e.qemuVMs() {
		if v.brec == nil {
			continue
		}
		accel := v.brec.Accel
		if accel == "" && v.brec.Launch != nil {
			accel = map[bool]string{true: "kvm", false: "tcg"}[v.brec.Launch.KVM]
		}
		if accel == "" {
			continue
		}
		sandboxed := false
		switch {
		case v.running() && v.statusEr == nil:
			sandboxed = v.status.Seccomp == 2
		case v.confine() != nil:
			sandboxed = v.confine().Sandbox != ""
		}
		if accel == "kvm" && !sandboxed {
			out = append(out, Check{Status: Warn, Check: "accelerator: " + v.rec.Name,
				Detail: "KVM without QEMU's seccomp sandbox: the guest reaches the host kernel's KVM code through an unfiltered QEMU",
				Fix:    "install a QEMU with seccomp support, then mvmctl restart " + v.rec.Name})
			continue
		}
		state := v.rec.State
		if v.running() {
			state = "running"
		}
		facts = append(facts, fmt.Sprintf("%s: %s (%s)", v.rec.Name, accel, state))
		tcg = tcg || accel == "tcg"
	}
	if len(facts) > 0 {
		d := strings.Join(facts, ", ")
		if tcg {
			d += "; TCG is software emulation: slower, no weaker for the host"
		}
		out = append([]Check{{Status: Info, Check: "accelerator", Detail: d}}, out...)
	}
	return out
}

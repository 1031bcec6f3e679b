package security

import (
	"fmt"
	"sort"
	"strings"

	"github.com/mvm-dev/mvm/internal/backend/docker"
	"github.com/mvm-dev/mvm/internal/backend/firecracker"
	"github.com/mvm-dev/mvm/internal/network"
)

// checkConsole: which VMs' agents serve an interactive console. The policy
// is the image recipe's [access] console, recorded at boot in the VM's
// Boot.Console and put on its config drive; the agent refuses the console
// operation without it.
func checkConsole(e *Env) []Check {
	var allow, deny, unknown []string
	for _, rec := range e.VMs {
		label := rec.Name + " (image " + rec.Image + ")"
		switch {
		case rec.Boot == nil:
			unknown = append(unknown, label)
		case rec.Boot.Console:
			allow = append(allow, label)
		default:
			deny = append(deny, label)
		}
	}
	if len(allow)+len(deny)+len(unknown) == 0 {
		return nil
	}
	var parts []string
	if len(allow) > 0 {
		parts = append(parts, "allowed by the image ([access] console = true) on "+strings.Join(allow, ", "))
	}
	if len(deny) > 0 {
		parts = append(parts, "refused by the agent on "+strings.Join(deny, ", "))
	}
	if len(unknown) > 0 {
		parts = append(parts, "not booted yet: "+strings.Join(unknown, ", "))
	}
	return []Check{{Status: Info, Check: "console access",
		Detail: strings.Join(parts, "; ") + "; a console is a shell for mvmctl only, over the authenticated channel"}}
}

// egressOpen reports whether a network's policy lets everything out (its
// preset is open; deny rules do not make it closed).
func egressOpen(eg *network.Egress) bool {
	return eg == nil || eg.Preset == "" || eg.Preset == network.EgressOpen
}

// checkNetworks: each network's egress policy. A bridged network that is
// not internal and whose egress is open is a warning; user-mode networks
// cannot enforce a policy at all.
func checkNetworks(e *Env) []Check {
	var out []Check
	if e.NetworksErr != nil {
		out = append(out, Check{Status: Warn, Check: "networks", Detail: "some network records cannot be read: " + e.NetworksErr.Error(),
			Fix: "repair or remove the file named above"})
	}
	recorded := map[string]bool{}
	for _, n := range e.Networks {
		recorded[n.Name] = true
		out = append(out, networkCheck(n))
	}
	// --network user has no record: the VMs say they use it.
	var adhoc []string
	for _, rec := range e.VMs {
		if rec.Net != nil && rec.Net.Network == network.ModeUser && !recorded[network.ModeUser] {
			adhoc = append(adhoc, rec.Name)
		}
	}
	if len(adhoc) > 0 {
		out = append(out, Check{Status: Info, Check: "network: user (ad hoc)",
			Detail: "user-mode networking (the VMM's own NAT) for " + strings.Join(adhoc, ", ") + ": it cannot enforce an egress policy; VMs reach whatever the host reaches, and not each other"})
	}
	if len(out) == 0 {
		out = append(out, Check{Status: Info, Check: "networks", Detail: "no networks yet ('default' is made on the first 'mvmctl up')"})
	}
	return out
}

func networkCheck(n *network.Network) Check {
	c := Check{Check: "network: " + n.Name}
	vms := "no VMs"
	if names := n.VMNames(); len(names) > 0 {
		vms = "VMs " + strings.Join(names, ", ")
	}
	var containers []string
	for _, a := range n.Attached {
		if n.Mode == network.ModeBridge && a.TAP == "" {
			containers = append(containers, a.VM)
		}
	}
	sort.Strings(containers)
	switch n.Mode {
	case network.ModeUser:
		c.Status = Info
		c.Detail = "user mode (the VMM's own NAT), " + vms + ": it cannot enforce an egress policy; VMs reach whatever the host reaches, and not each other"
	case network.ModeBridge:
		switch {
		case n.Internal:
			c.Status = Pass
			c.Detail = "bridged, internal (no route out: VMs reach each other and DNS on the gateway only), " + vms
		case egressOpen(n.Egress):
			c.Status = Warn
			c.Detail = "bridged, egress " + n.Egress.Describe() + ": VMs reach everything the host can reach, " + vms
			c.Fix = "mvmctl network update " + n.Name + " --egress registries (or none, dev; add --allow RULE); see docs/networking.md"
		default:
			c.Status = Pass
			c.Detail = "bridged, egress " + n.Egress.Describe() + " (enforced by mvm's nftables table; anything else is dropped), " + vms
		}
	default:
		c.Status = Warn
		c.Detail = fmt.Sprintf("unknown mode %q, %s", n.Mode, vms)
		c.Fix = "recreate the network with 'mvmctl network create'"
	}
	if len(containers) > 0 {
		c.Detail += "; docker-backend VMs " + strings.Join(containers, ", ") + " use Docker's own NAT, which enforces no egress policy"
	}
	return c
}

// checkDocker: containers share the host kernel. A warning as soon as a VM
// runs on the docker backend.
func checkDocker(e *Env) []Check {
	const name = "docker backend"
	var running, idle []string
	for _, rec := range e.VMs {
		if rec.Backend != docker.Name {
			continue
		}
		if active(rec) {
			running = append(running, rec.Name)
		} else {
			idle = append(idle, rec.Name)
		}
	}
	daemon := dockerFacts(e.Host.Docker.SecurityOptions)
	switch {
	case len(running) > 0:
		d := "running on it: " + strings.Join(running, ", ") +
			"; containers share the host kernel, isolation weaker than a VM's: a kernel bug or a container escape reaches the host directly"
		if daemon != "" {
			d += "; daemon: " + daemon
		}
		d += "; still enforced: the agent accepts only your host key and mvmctl only the container's pinned guest key (TLS 1.3 over the bind-mounted socket), the image's console policy, and the host's checks on everything the guest sends"
		return []Check{{Status: Warn, Check: name, Detail: d,
			Fix: "run what needs a VM boundary on QEMU: mvmctl up --backend qemu"}}
	case e.Host.Docker.Available:
		d := "daemon reachable, no VM runs on it"
		if len(idle) > 0 {
			d += " (stopped: " + strings.Join(idle, ", ") + ")"
		}
		d += "; containers would share the host kernel (weaker isolation than a VM)"
		if daemon != "" {
			d += "; daemon: " + daemon
		}
		return []Check{{Status: Info, Check: name, Detail: d}}
	default:
		why := e.Host.Docker.Reason
		if why == "" {
			why = "not probed"
		}
		return []Check{{Status: Info, Check: name, Detail: "not available (" + why + ")"}}
	}
}

// dockerFacts summarises the daemon's security options.
func dockerFacts(opts []string) string {
	if opts == nil {
		return ""
	}
	var facts []string
	userns, rootless := false, false
	for _, o := range opts {
		kv := map[string]string{}
		for _, f := range strings.Split(o, ",") {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		switch kv["name"] {
		case "seccomp":
			facts = append(facts, "seccomp profile "+kv["profile"])
		case "apparmor", "selinux":
			facts = append(facts, kv["name"])
		case "userns":
			userns = true
			facts = append(facts, "user namespaces remapped")
		case "rootless":
			rootless = true
			facts = append(facts, "rootless")
		}
	}
	if !userns && !rootless {
		facts = append(facts, "no user namespace (root in a container is uid 0 of the host kernel)")
	}
	return strings.Join(facts, ", ")
}

// checkFirecracker reports, for each running Firecracker VM, what its
// process really has: Firecracker's seccomp filter (mvm never passes
// --no-seccomp or a filter of its own) and whether it runs jailed.
func checkFirecracker(e *Env) []Check {
	if !e.Host.Firecracker {
		return []Check{{Status: Info, Check: "firecracker jailer/seccomp", Detail: "not available (no Firecracker backend on this host)"}}
	}
	var out []Check
	for _, r := range e.VMs {
		if r.Backend != firecracker.Name || r.State != "running" && r.State != "paused" {
			continue
		}
		name := "firecracker " + r.Name
		c, err := firecracker.ConfinementOf(r.Dir, e.ProcRoot)
		switch {
		case err != nil:
			out = append(out, Check{Status: Warn, Check: name, Detail: "cannot read its process: " + err.Error()})
		case c.StandIn:
			out = append(out, Check{Status: Info, Check: name, Detail: fmt.Sprintf("pid %d is the test stand-in VMM (guest on QEMU): no Firecracker seccomp filter or chroot of its own; jail layout %s", c.Pid, c.Jail)})
		case c.NoSeccomp || c.CustomFilter || c.Seccomp != 2:
			out = append(out, Check{Status: Fail, Check: name + " seccomp",
				Detail: fmt.Sprintf("pid %d runs without Firecracker's default seccomp filter (seccomp mode %d, --no-seccomp %v, --seccomp-filter %v)", c.Pid, c.Seccomp, c.NoSeccomp, c.CustomFilter),
				Fix:    "use a release (musl) build of Firecracker, which embeds the default filter, and restart the VM"})
		default:
			out = append(out, Check{Status: Pass, Check: name + " seccomp", Detail: fmt.Sprintf("pid %d runs under Firecracker's default seccomp filter", c.Pid)})
		}
		if err == nil && !c.StandIn {
			if c.Jailed && c.UID != 0 {
				out = append(out, Check{Status: Pass, Check: name + " jailer", Detail: fmt.Sprintf("chrooted, uid %d", c.UID)})
			} else {
				out = append(out, Check{Status: Warn, Check: name + " jailer", Detail: fmt.Sprintf("not jailed (chroot %v, uid %d; %s)", c.Jailed, c.UID, c.Jail),
					Fix: "run mvmctl as root with Firecracker's jailer of the same release on PATH (or MVM_JAILER_BIN), then restart the VM"})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, Check{Status: Info, Check: "firecracker jailer/seccomp", Detail: "no Firecracker VM runs; each running one is checked from /proc"})
	}
	return out
}

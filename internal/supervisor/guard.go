package supervisor

// The VMM guard.
//
// The supervisor starts the VMM with a parent-death signal (SIGKILL), so a
// VMM never outlives a supervisor that is killed. The kernel clears that
// signal when a process changes its credentials, as QEMU does with -runas
// once it has set up its devices. For such a VMM (Config.VMMGuard) the
// supervisor starts a guard: its own binary again, holding a pidfd of the
// VMM, whose parent-death signal is not cleared (it keeps root's
// credentials). When the supervisor dies the guard kills the VMM through
// the pidfd, which names that process and no other even after its pid is
// reused; when the VMM exits the guard exits too.

// guardArg, after Arg, selects guard mode. A VM directory is an absolute
// path, so it is never taken for this.
const guardArg = "--vmm-guard"

package qemu

import (
	"fmt"
	"slices"
	"strings"
)

// perVMFlags take a value that names something of one VM only (its name,
// sockets, pid file, incoming stream) and does not shape the machine.
var perVMFlags = map[string]bool{"-name": true, "-qmp": true, "-pidfile": true, "-incoming": true}

// perVMKeys are option keys inside -drive, -device and -object
// values that may differ between a saved VM and its clones: backing paths,
// the vsock CID, and how the RAM file is mapped (a source maps its own file
// shared, a clone the snapshot's file private; neither is in the stream).
// Device ids, order and every other property must match.
// A NIC's MAC is the clone's own: the guest sets it after the restore.
// A drive's format is how the host stores it, not in the stream either:
// a clone's qcow2 overlay restores a VM saved with a raw disk.
var perVMKeys = map[string]bool{"path": true, "file": true, "format": true, "guest-cid": true, "mem-path": true, "share": true, "mac": true}

// blankedFlags take an option string whose perVMKeys are blanked.
var blankedFlags = map[string]bool{"-drive": true, "-device": true, "-object": true}

// machineArgs reduces a QEMU argv to what a migration stream depends on, by
// dropping per-VM flags and blanking per-VM option values.
func machineArgs(argv []string) []string {
	var out []string
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if i == 0 {
			out = append(out, a) // the binary: same QEMU on both ends
			continue
		}
		if perVMFlags[a] {
			i++
			continue
		}
		out = append(out, a)
		// -netdev, like -chardev, is a host-side backend (a TAP or the
		// user-mode stack) that the stream does not contain.
		if (a == "-chardev" || a == "-netdev") && i+1 < len(argv) {
			i++
			out = append(out, chardevID(argv[i]))
			continue
		}
		if blankedFlags[a] && i+1 < len(argv) {
			i++
			out = append(out, blankKeys(argv[i]))
		}
	}
	return out
}

// blankKeys replaces the values of perVMKeys in a QEMU option string, where
// ",," is an escaped comma inside a value.
func blankKeys(opts string) string {
	const escComma = "\x00"
	parts := strings.Split(strings.ReplaceAll(opts, ",,", escComma), ",")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && perVMKeys[k] {
			parts[i] = k + "=*"
		}
	}
	return strings.ReplaceAll(strings.Join(parts, ","), escComma, ",,")
}

// sameMachine returns nil when a and b build the same machine, or an error
// naming the first difference.
func sameMachine(saved, restore []string) error {
	x, y := machineArgs(saved), machineArgs(restore)
	if slices.Equal(x, y) {
		return nil
	}
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return fmt.Errorf("argument %d differs: snapshot has %q, restore would use %q", i, x[i], y[i])
		}
	}
	return fmt.Errorf("snapshot has %d machine arguments, restore would use %d", len(x), len(y))
}

// chardevID reduces a -chardev option string to its id. A character device
// backend lives on the host only and never enters the migration stream (the
// device in front of it does), so its type and options do not shape the
// machine: a snapshot of a VM whose console QEMU wrote to a file restores
// into one whose console is the supervisor's socket.
func chardevID(opts string) string {
	for _, p := range strings.Split(strings.ReplaceAll(opts, ",,", "\x00"), ",") {
		if v, ok := strings.CutPrefix(p, "id="); ok {
			return "id=" + strings.ReplaceAll(v, "\x00", ",,")
		}
	}
	return opts
}

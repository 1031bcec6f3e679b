package qemu

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// arch describes how QEMU runs guests of one architecture.
type arch struct {
	Binary  string
	Machine func(acpi bool) string
	Console string // kernel console device
}

var arches = map[string]arch{
	"amd64": {
		Binary: "qemu-system-x86_64",
		// acpi=on: Debian's cloud kernel has CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES
		// unset, so with acpi=off (devices announced on the command line)
		// virtio_mmio ignores "device=" and the guest sees no disks.
		Machine: func(acpi bool) string {
			return "microvm,x-option-roms=off,isa-serial=on,acpi=" + onOff(acpi)
		},
		Console: "ttyS0",
	},
	"arm64": {
		// microvm is x86-only; virt with virtio-mmio devices is the closest.
		Binary:  "qemu-system-aarch64",
		Machine: func(bool) string { return "virt,gic-version=max" },
		Console: "ttyAMA0",
	},
}

// launch is everything the argv depends on, resolved by Start.
type launch struct {
	Arch      string // GOARCH of the guest; not the host's only under TCG
	Binary    string // overrides the arch's binary when set
	Name      string
	KVM       bool
	HVF       bool `json:",omitempty"` // macOS Hypervisor.framework; never with KVM
	ACPI      bool
	TSCKHz    int // passed as tsc_early_khz under TCG: PIT calibration is flaky there
	Kernel    string
	Initrd    string
	Cmdline   string
	CPUs      int
	MemoryMiB int
	Disks     []backend.Disk // resolved: root overlay first, config drive last
	SerialLog string         // guest console log, written by the supervisor
	// ConsoleSock is the console chardev socket the supervisor reads
	// SerialLog's content from. Empty with SerialLog set (launches recorded
	// before the supervisor rotated the log): QEMU writes SerialLog itself.
	ConsoleSock string `json:",omitempty"`
	QMPSock     string
	PidFile     string
	Transport   string // guestcfg.TransportSerial or TransportVsock
	SerialSock  string
	CID         uint32
	// MemPath is a file holding guest RAM (memory-backend-file); empty for
	// anonymous RAM, which is what VMs started before it had. A source VM
	// maps its own file shared, so a snapshot can copy RAM from the file and
	// leave it out of the migration stream (x-ignore-shared); a clone maps
	// the snapshot's file private, copy-on-write, so it never writes it.
	MemPath  string `json:",omitempty"`
	MemShare bool   `json:",omitempty"`
	// NICs are virtio-net devices, each on a TAP or the user-mode stack.
	NICs []backend.NIC `json:",omitempty"`
	// Passt is the passt binary serving user-mode NICs; empty: QEMU's
	// built-in stack.
	Passt string `json:",omitempty"`
	// Dir is the VM directory (passt's sockets live there).
	Dir string `json:",omitempty"`
	// Confine is how QEMU is confined (confine.go): its seccomp filter and
	// the user it drops to, with why either is missing. Nil in launches
	// recorded before QEMU was confined.
	Confine *Confinement `json:",omitempty"`
}

// memBackendID names the RAM backend object; it is also the RAM block's id
// in the migration stream, so it must never change.
const memBackendID = "mem"

// esc doubles commas, QEMU's escape inside option values.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// kernelCmdline puts our required arguments first so the spec's can override
// the ones the kernel lets later values win.
func kernelCmdline(l launch, a arch) string {
	parts := []string{"console=" + a.Console, "reboot=t", "panic=-1"}
	if !l.KVM && l.TSCKHz > 0 && l.Arch == "amd64" {
		parts = append(parts, "tsc_early_khz="+strconv.Itoa(l.TSCKHz))
	}
	if c := strings.TrimSpace(l.Cmdline); c != "" {
		parts = append(parts, c)
	}
	return strings.Join(parts, " ")
}

// listenSockets are the chardev sockets the supervisor binds and hands QEMU
// as listening descriptors (supervisor.Config.Listen), in descriptor order.
// It connects to them before QEMU runs, so neither side polls for the other.
func listenSockets(l launch) []string {
	var socks []string
	if l.SerialLog != "" && l.ConsoleSock != "" {
		socks = append(socks, l.ConsoleSock)
	}
	if l.Transport == guestcfg.TransportSerial {
		socks = append(socks, l.SerialSock)
	}
	return socks
}

// listenFD is the descriptor number QEMU gets for the socket at path.
func listenFD(l launch, path string) string {
	i := slices.Index(listenSockets(l), path)
	return strconv.Itoa(supervisor.FirstListenFD + i)
}

// binary is the QEMU executable l runs: its override, else its arch's.
func (l launch) binary() string {
	if l.Binary != "" {
		return l.Binary
	}
	return arches[l.Arch].Binary
}

// buildArgv renders the QEMU command line. It is pure so it can be table-tested.
func buildArgv(l launch) ([]string, error) {
	a, ok := arches[l.Arch]
	if !ok {
		return nil, fmt.Errorf("unsupported architecture %q", l.Arch)
	}
	bin := l.binary()
	accel, cpu := "tcg", "max"
	switch {
	case l.KVM:
		accel, cpu = "kvm", "host"
	case l.HVF:
		accel, cpu = "hvf", "host"
	}
	machine := a.Machine(l.ACPI)
	if l.MemPath != "" {
		machine += ",memory-backend=" + memBackendID
	}
	argv := []string{bin, "-name", esc(l.Name)}
	argv = append(argv, l.Confine.args()...)
	argv = append(argv,
		"-M", machine,
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(l.MemoryMiB), "-smp", strconv.Itoa(l.CPUs),
	)
	if l.MemPath != "" {
		argv = append(argv, "-object", fmt.Sprintf("memory-backend-file,id=%s,size=%dM,mem-path=%s,share=%s",
			memBackendID, l.MemoryMiB, esc(l.MemPath), onOff(l.MemShare)))
	}
	argv = append(argv,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", l.Kernel,
	)
	if l.Initrd != "" {
		argv = append(argv, "-initrd", l.Initrd)
	}
	argv = append(argv, "-append", kernelCmdline(l, a))
	switch {
	case l.SerialLog != "" && l.ConsoleSock != "":
		// wait=on: QEMU waits for the supervisor to connect before it runs
		// the guest, so no boot output is lost (with wait=off a socket
		// chardev drops output while no client is connected). A socket,
		// not a FIFO: QEMU opens FIFOs read-write, so a pipe buffers 64 KiB
		// with nobody reading and needs two FIFOs to keep QEMU from reading
		// its own output back as console input.
		argv = append(argv, "-chardev", "socket,id=console,fd="+listenFD(l, l.ConsoleSock)+",server=on,wait=on", "-serial", "chardev:console")
	case l.SerialLog != "":
		argv = append(argv, "-chardev", "file,id=console,path="+esc(l.SerialLog), "-serial", "chardev:console")
	}
	argv = append(argv,
		"-qmp", "unix:"+esc(l.QMPSock)+",server=on,wait=off",
		"-pidfile", l.PidFile,
	)
	for _, d := range l.Disks {
		format := d.Format
		if format == "" {
			format = "raw"
		}
		drive := fmt.Sprintf("id=%s,file=%s,format=%s,if=none", esc(d.ID), esc(d.Path), format)
		if d.ReadOnly {
			drive += ",readonly=on"
		} else if l.Confine.dropsPrivileges() {
			drive += keepReadWrite
		}
		argv = append(argv, "-drive", drive, "-device", "virtio-blk-device,drive="+esc(d.ID))
	}
	switch l.Transport {
	case guestcfg.TransportSerial:
		argv = append(argv,
			"-device", "virtio-serial-device,max_ports=2",
			"-chardev", "socket,id=agent,fd="+listenFD(l, l.SerialSock)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+guestcfg.SerialPortName,
		)
	case guestcfg.TransportVsock:
		if l.CID < 3 {
			return nil, fmt.Errorf("invalid vsock guest CID %d", l.CID)
		}
		argv = append(argv, "-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d", l.CID))
	default:
		return nil, fmt.Errorf("unsupported agent transport %q", l.Transport)
	}
	for _, n := range l.NICs {
		nd, err := netdev(n, l.KVM, l.passtFD(n))
		if err != nil {
			return nil, err
		}
		argv = append(argv, "-netdev", nd, "-device", "virtio-net-device,netdev="+esc(n.ID)+",mac="+n.MAC)
	}
	argv = append(argv, "-device", "virtio-rng-device")
	return argv, nil
}

// netdev renders a NIC's host side: a TAP we created (QEMU only opens it),
// or QEMU's user-mode stack with its port forwards.
func netdev(n backend.NIC, kvm bool, passtFD int) (string, error) {
	if n.ID == "" || strings.ContainsAny(n.ID, ",=") {
		return "", fmt.Errorf("invalid NIC id %q", n.ID)
	}
	if _, err := net.ParseMAC(n.MAC); err != nil {
		return "", fmt.Errorf("NIC %s: invalid MAC %q", n.ID, n.MAC)
	}
	switch {
	case n.TAP != "":
		// vhost-net only helps (and only works) with KVM.
		return fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no,vhost=%s", n.ID, esc(n.TAP), onOff(kvm)), nil
	case n.User != nil && passtFD > 0:
		// passt, a process of its own beside QEMU, over a socket pair the
		// supervisor made.
		return fmt.Sprintf("stream,id=%s,server=off,addr.type=fd,addr.str=%d", n.ID, passtFD), nil
	case n.User != nil:
		u := n.User
		s := fmt.Sprintf("user,id=%s,net=%s,host=%s,dns=%s,ipv6=off", n.ID, u.Subnet, u.Gateway, u.DNS)
		for _, f := range u.Forwards {
			if f.Proto != "tcp" && f.Proto != "udp" {
				return "", fmt.Errorf("NIC %s: forward protocol %q", n.ID, f.Proto)
			}
			s += fmt.Sprintf(",hostfwd=%s:%s:%d-%s:%d", f.Proto, f.HostIP, f.HostPort, u.GuestIP, f.GuestPort)
		}
		return s, nil
	}
	return "", fmt.Errorf("NIC %s has neither a TAP nor user-mode networking", n.ID)
}

// passtNICs are the NICs passt serves, in order.
func (l launch) passtNICs() []backend.NIC {
	var out []backend.NIC
	if l.Passt == "" {
		return nil
	}
	for _, n := range l.NICs {
		if n.User != nil {
			out = append(out, n)
		}
	}
	return out
}

// passtFD is the descriptor QEMU gets for n's passt (after the listening
// sockets, in passtNICs order), or 0 for QEMU's own stack.
func (l launch) passtFD(n backend.NIC) int {
	for i, p := range l.passtNICs() {
		if p.ID == n.ID {
			return supervisor.FirstListenFD + len(listenSockets(l)) + i
		}
	}
	return 0
}

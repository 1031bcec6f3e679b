package qemu

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

func baseLaunch() launch {
	return launch{
		Arch: "amd64", Name: "web", ACPI: true, TSCKHz: 2596130,
		Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Cmdline: "quiet",
		CPUs: 2, MemoryMiB: 256,
		Disks: []backend.Disk{
			{ID: "root", Path: "/vm/root.qcow2", Format: "qcow2"},
			{ID: "config", Path: "/vm/config.img", Format: "raw", ReadOnly: true},
		},
		SerialLog: "/vm/serial.log", ConsoleSock: "/vm/console.sock",
		QMPSock: "/vm/qmp.sock", PidFile: "/vm/qemu.pid",
		Transport: guestcfg.TransportSerial, SerialSock: "/vm/serial-agent.sock",
	}
}

// values returns the argument after each occurrence of flag.
func values(argv []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			out = append(out, argv[i+1])
		}
	}
	return out
}

func TestBuildArgv(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*launch)
		want    map[string][]string // flag -> all its values, in order
		absent  []string            // substrings no argument may contain
		wantErr string
	}{
		{
			name: "tcg serial",
			want: map[string][]string{
				"-M":      {"microvm,x-option-roms=off,isa-serial=on,acpi=on"},
				"-accel":  {"tcg"},
				"-cpu":    {"max"},
				"-m":      {"256"},
				"-smp":    {"2"},
				"-append": {"console=ttyS0 reboot=t panic=-1 tsc_early_khz=2596130 quiet"},
				"-qmp":    {"unix:/vm/qmp.sock,server=on,wait=off"},
				"-drive": {
					"id=root,file=/vm/root.qcow2,format=qcow2,if=none",
					"id=config,file=/vm/config.img,format=raw,if=none,readonly=on",
				},
				"-device": {
					"virtio-blk-device,drive=root", "virtio-blk-device,drive=config",
					"virtio-serial-device,max_ports=2",
					"virtserialport,chardev=agent,name=" + guestcfg.SerialPortName,
					"virtio-rng-device",
				},
				"-chardev": {
					"socket,id=console,fd=3,server=on,wait=on",
					"socket,id=agent,fd=4,server=on,wait=off",
				},
				"-serial":  {"chardev:console"},
				"-pidfile": {"/vm/qemu.pid"},
			},
			absent: []string{"vsock", "-object", "memory-backend", "serial.log"},
		},
		{
			name: "console written by QEMU (launches recorded before rotation)",
			mod:  func(l *launch) { l.ConsoleSock = "" },
			want: map[string][]string{
				"-chardev": {
					"file,id=console,path=/vm/serial.log",
					"socket,id=agent,fd=3,server=on,wait=off",
				},
				"-serial": {"chardev:console"},
			},
			absent: []string{"console.sock"},
		},
		{
			name: "kvm vsock",
			mod: func(l *launch) {
				l.KVM, l.Transport, l.CID = true, guestcfg.TransportVsock, 7
			},
			want: map[string][]string{
				"-accel":  {"kvm"},
				"-cpu":    {"host"},
				"-append": {"console=ttyS0 reboot=t panic=-1 quiet"}, // no tsc hint with KVM
				"-device": {
					"virtio-blk-device,drive=root", "virtio-blk-device,drive=config",
					"vhost-vsock-device,guest-cid=7", "virtio-rng-device",
				},
			},
			absent: []string{"virtserialport", "serial-agent"},
		},
		{
			name: "hvf (macOS)",
			mod:  func(l *launch) { l.HVF, l.TSCKHz = true, 0 },
			want: map[string][]string{
				"-accel": {"hvf"},
				"-cpu":   {"host"},
			},
		},
		{
			name: "commas escaped",
			mod: func(l *launch) {
				l.Disks = []backend.Disk{{ID: "root", Path: "/a,b/root.img"}}
				l.QMPSock = "/a,b/qmp.sock"
			},
			want: map[string][]string{
				"-drive": {"id=root,file=/a,,b/root.img,format=raw,if=none"},
				"-qmp":   {"unix:/a,,b/qmp.sock,server=on,wait=off"},
			},
		},
		{
			name: "no initrd, no serial log, acpi off",
			mod:  func(l *launch) { l.Initrd, l.SerialLog, l.ACPI = "", "", false },
			want: map[string][]string{
				"-M": {"microvm,x-option-roms=off,isa-serial=on,acpi=off"},
			},
			absent: []string{"-initrd", "-serial", "id=console", "chardev:console"},
		},
		{
			name: "arm64 uses virt",
			mod:  func(l *launch) { l.Arch, l.TSCKHz = "arm64", 0 },
			want: map[string][]string{
				"-M":      {"virt,gic-version=max"},
				"-append": {"console=ttyAMA0 reboot=t panic=-1 quiet"},
			},
		},
		{
			name: "shared RAM file",
			mod:  func(l *launch) { l.MemPath, l.MemShare = "/vm/m,em", true },
			want: map[string][]string{
				"-M":      {"microvm,x-option-roms=off,isa-serial=on,acpi=on,memory-backend=mem"},
				"-m":      {"256"},
				"-object": {"memory-backend-file,id=mem,size=256M,mem-path=/vm/m,,em,share=on"},
			},
		},
		{
			name: "private RAM file",
			mod:  func(l *launch) { l.MemPath = "/snap/mem" },
			want: map[string][]string{
				"-object": {"memory-backend-file,id=mem,size=256M,mem-path=/snap/mem,share=off"},
			},
		},
		{name: "bad cid", mod: func(l *launch) { l.Transport, l.CID = guestcfg.TransportVsock, 2 }, wantErr: "CID"},
		{name: "bad transport", mod: func(l *launch) { l.Transport = "carrier-pigeon" }, wantErr: "transport"},
		{name: "bad arch", mod: func(l *launch) { l.Arch = "mips" }, wantErr: "architecture"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := baseLaunch()
			if tc.mod != nil {
				tc.mod(&l)
			}
			argv, err := buildArgv(l)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for flag, want := range tc.want {
				if got := values(argv, flag); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			for _, s := range tc.absent {
				for _, a := range argv {
					// Flags match whole arguments, anything else as a substring.
					if a == s || (!strings.HasPrefix(s, "-") && strings.Contains(a, s)) {
						t.Errorf("argv contains %q in %q", s, a)
					}
				}
			}
			for _, f := range []string{"-nodefaults", "-no-user-config", "-no-reboot"} {
				if !slices.Contains(argv, f) {
					t.Errorf("missing %s", f)
				}
			}
		})
	}
}

func TestResolveDisksNeverAttachesRootImage(t *testing.T) {
	dir := t.TempDir()
	img := dir + "/cached.ext4"
	if err := writeSparse(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	spec := backend.Spec{
		Dir: dir, RootImage: img, ConfigISO: dir + "/cfg.img",
		Disks: []backend.Disk{{ID: "root", Path: img}, {ID: "data", Path: dir + "/data.img"}},
	}
	disks, err := resolveDisks(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range disks {
		ids = append(ids, d.ID)
		if d.Path == img {
			t.Fatalf("cached root image attached: %+v", d)
		}
	}
	if !slices.Equal(ids, []string{"root", "data", "config"}) {
		t.Fatalf("ids = %v", ids)
	}
	if !disks[2].ReadOnly || disks[0].ReadOnly {
		t.Fatalf("read-only flags wrong: %+v", disks)
	}
}

func TestRunState(t *testing.T) {
	for in, want := range map[string]backend.State{
		"running": backend.StateRunning, "paused": backend.StatePaused,
		"prelaunch": backend.StateStarting, "shutdown": backend.StateStopping,
		"guest-panicked": backend.StateFailed, "internal-error": backend.StateFailed,
	} {
		if got := runState(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func TestHostTSC(t *testing.T) {
	khz := hostTSCKHz()
	t.Logf("host TSC: %d kHz", khz)
}

// The supervisor hands QEMU Config.Listen as fds 3, 4, …: each chardev's
// fd= must name the socket at that position, whatever the launch has.
func TestListenSocketsMatchChardevFDs(t *testing.T) {
	for name, mod := range map[string]func(*launch){
		"console and serial": func(*launch) {},
		"file console":       func(l *launch) { l.ConsoleSock = "" },
		"vsock":              func(l *launch) { l.Transport, l.CID = guestcfg.TransportVsock, 7 },
	} {
		t.Run(name, func(t *testing.T) {
			l := baseLaunch()
			mod(&l)
			argv, err := buildArgv(l)
			if err != nil {
				t.Fatal(err)
			}
			socks := listenSockets(l)
			want := map[string]string{"console": l.ConsoleSock, "agent": l.SerialSock}
			n := 0
			for _, v := range values(argv, "-chardev") {
				if !strings.HasPrefix(v, "socket,") {
					continue
				}
				n++
				var id string
				fd := -1
				for _, kv := range strings.Split(v, ",") {
					if s, ok := strings.CutPrefix(kv, "id="); ok {
						id = s
					}
					if s, ok := strings.CutPrefix(kv, "fd="); ok {
						fd, _ = strconv.Atoi(s)
					}
				}
				i := fd - supervisor.FirstListenFD
				if i < 0 || i >= len(socks) || socks[i] != want[id] {
					t.Errorf("chardev %q: fd %d is %v in %q, want %s", id, fd, i, socks, want[id])
				}
			}
			if n != len(socks) {
				t.Errorf("%d socket chardevs, %d listen sockets %q", n, len(socks), socks)
			}
		})
	}
}

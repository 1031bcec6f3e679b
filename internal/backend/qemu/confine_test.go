package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func confineLaunch(c *Confinement) launch {
	return launch{
		Arch: "amd64", Name: "c", Kernel: "/k", CPUs: 1, MemoryMiB: 128,
		Disks: []backend.Disk{
			{ID: "root", Path: "/vm/root.qcow2", Format: "qcow2"},
			{ID: "config", Path: "/vm/config.img", Format: "raw", ReadOnly: true},
		},
		QMPSock: "/vm/qmp.sock", PidFile: "/vm/qemu.pid",
		Transport: guestcfg.TransportSerial, SerialSock: "/vm/serial.sock",
		Confine: c,
	}
}

// flagValue returns the value after the first flag in argv, or "".
func flagValue(argv []string, flag string) string {
	if i := slices.Index(argv, flag); i >= 0 && i+1 < len(argv) {
		return argv[i+1]
	}
	return ""
}

func TestBuildArgvConfinement(t *testing.T) {
	argv, err := buildArgv(confineLaunch(&Confinement{Sandbox: sandboxRunAs, RunAs: "7173741:7173741"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := flagValue(argv, "-sandbox"); got != sandboxRunAs {
		t.Errorf("-sandbox %q, want %q", got, sandboxRunAs)
	}
	if got := flagValue(argv, "-runas"); got != "7173741:7173741" {
		t.Errorf("-runas %q", got)
	}
	// QEMU keeps its writable drive open read-write: after -runas it could
	// not reopen it to save or load a snapshot. A read-only one is opened
	// read-only for good anyway.
	var drives []string
	for i, a := range argv {
		if a == "-drive" {
			drives = append(drives, argv[i+1])
		}
	}
	if len(drives) != 2 || !strings.HasSuffix(drives[0], keepReadWrite) || strings.Contains(drives[1], "auto-read-only") {
		t.Errorf("drives = %q", drives)
	}

	// A QEMU that keeps mvmctl's user denies set*id too and needs no
	// drive options.
	argv, err = buildArgv(confineLaunch(&Confinement{Sandbox: sandboxDeny}))
	if err != nil {
		t.Fatal(err)
	}
	if flagValue(argv, "-sandbox") != sandboxDeny || slices.Contains(argv, "-runas") || strings.Contains(strings.Join(argv, " "), "auto-read-only") {
		t.Errorf("unprivileged argv = %q", argv)
	}
	// Launches recorded before confinement, or a QEMU without seccomp.
	for _, c := range []*Confinement{nil, {Notes: []string{"no seccomp sandbox: x"}}} {
		argv, err := buildArgv(confineLaunch(c))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(argv, "-sandbox") || slices.Contains(argv, "-runas") {
			t.Errorf("confinement %+v: argv = %q", c, argv)
		}
	}
	if !strings.Contains(sandboxDeny, "elevateprivileges=deny") || !strings.Contains(sandboxDeny, "spawn=deny") ||
		!strings.Contains(sandboxRunAs, "spawn=deny") || !strings.Contains(sandboxRunAs, "obsolete=deny") || !strings.Contains(sandboxRunAs, "resourcecontrol=deny") {
		t.Errorf("filters: %q, %q", sandboxDeny, sandboxRunAs)
	}
}

// TestRestoreComparesWithoutConfinement: a snapshot saved by an unconfined
// QEMU (an older mvmctl, or a QEMU without seccomp) restores into a confined
// one and back, while a real machine difference is still caught.
func TestRestoreComparesWithoutConfinement(t *testing.T) {
	plain, err := buildArgv(confineLaunch(nil))
	if err != nil {
		t.Fatal(err)
	}
	confined, err := buildArgv(confineLaunch(&Confinement{Sandbox: sandboxRunAs, RunAs: "1:1"}))
	if err != nil {
		t.Fatal(err)
	}
	if sameMachine(plain, confined) == nil {
		t.Fatal("test is void: the raw argvs already compare equal")
	}
	if err := sameMachine(withoutConfinement(plain), withoutConfinement(confined)); err != nil {
		t.Errorf("unconfined snapshot, confined clone: %v", err)
	}
	if err := sameMachine(withoutConfinement(confined), withoutConfinement(plain)); err != nil {
		t.Errorf("confined snapshot, unconfined clone: %v", err)
	}
	l := confineLaunch(&Confinement{Sandbox: sandboxRunAs, RunAs: "1:1"})
	l.MemoryMiB = 256
	bigger, err := buildArgv(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameMachine(withoutConfinement(plain), withoutConfinement(bigger)); err == nil {
		t.Error("a different memory size compares equal")
	}
	if got := withoutConfinement(plain); !slices.Equal(got, plain) {
		t.Errorf("unconfined argv changed: %q", got)
	}
}

// fakeQEMU writes a script that stands for QEMU in the probe: it refuses
// -sandbox as a QEMU built without seccomp does when noSeccomp is set.
func fakeQEMU(t *testing.T, noSeccomp bool) string {
	t.Helper()
	script := "#!/bin/sh\ncat >/dev/null\nexit 0\n"
	if noSeccomp {
		script = "#!/bin/sh\ncase \"$*\" in *-sandbox*) echo 'qemu-system-x86_64: -sandbox on: seccomp support is disabled' >&2; exit 1;; esac\ncat >/dev/null\nexit 0\n"
	}
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfinementForWithoutSeccomp(t *testing.T) {
	c := confinementFor(context.Background(), fakeQEMU(t, true))
	if c.Sandbox != "" {
		t.Errorf("sandbox %q on a QEMU without seccomp: the VM would not start", c.Sandbox)
	}
	if len(c.Notes) == 0 || !strings.Contains(strings.Join(c.Notes, "; "), "seccomp support is disabled") {
		t.Errorf("notes = %q, want QEMU's reason", c.Notes)
	}
	if (c.RunAs != "") != (os.Geteuid() == 0) {
		t.Errorf("runas %q with euid %d", c.RunAs, os.Geteuid())
	}

	c = confinementFor(context.Background(), fakeQEMU(t, false))
	want := sandboxDeny
	if os.Geteuid() == 0 {
		want = sandboxRunAs
	}
	if c.Sandbox != want {
		t.Errorf("sandbox %q, want %q (notes %q)", c.Sandbox, want, c.Notes)
	}
}

func TestQEMUIDs(t *testing.T) {
	uid, gid, note := qemuIDs()
	if uid == 0 || gid == 0 {
		t.Fatalf("QEMU would run as %d:%d", uid, gid)
	}
	t.Logf("QEMU user %d:%d %s", uid, gid, note)
}

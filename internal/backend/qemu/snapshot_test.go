package qemu

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func testManifest() Manifest {
	l := baseLaunch()
	argv, _ := buildArgv(l)
	return Manifest{
		Version: manifestVersion, Backend: Name, Source: "web", Created: time.Unix(1700000000, 0).UTC(),
		QEMUVersion: "7.2.22", WasRunning: true,
		Arch: l.Arch, Accel: "tcg", ACPI: true, TSCKHz: l.TSCKHz,
		Kernel: l.Kernel, Initrd: l.Initrd, Cmdline: l.Cmdline, CPUs: l.CPUs, MemoryMiB: l.MemoryMiB,
		Transport: l.Transport,
		Disks: []SnapshotDisk{
			{ID: "root", Format: "qcow2", File: "disk-root.qcow2", Backing: "/cache/rootfs.ext4"},
			{ID: "config", Format: "raw", ReadOnly: true},
		},
		State: stateName, StateBytes: 94 << 20, SourceArgv: argv,
	}
}

func TestManifestRoundTripAndPins(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	if err := writeManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
	want := []string{"/k/vmlinuz", "/k/initrd", "/cache/rootfs.ext4"}
	if !slices.Equal(m.Pins(), want) {
		t.Fatalf("pins = %v, want %v", m.Pins(), want)
	}
	// The launch rebuilt from the manifest builds the same machine.
	l := m.launchFrom()
	l.Disks = baseLaunch().Disks
	l.Name, l.QMPSock, l.PidFile, l.SerialLog, l.SerialSock = "clone", "/c/q", "/c/p", "/c/s", "/c/a"
	argv, err := buildArgv(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameMachine(m.SourceArgv, argv); err != nil {
		t.Fatal(err)
	}
}

func TestManifestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Manifest)
		want string
	}{
		{"ok", func(*Manifest) {}, ""},
		{"version", func(m *Manifest) { m.Version = 9 }, "format version"},
		{"backend", func(m *Manifest) { m.Backend = "firecracker" }, "backend"},
		{"no kernel", func(m *Manifest) { m.Kernel = "" }, "kernel"},
		{"shape", func(m *Manifest) { m.MemoryMiB = 0 }, "shape"},
		{"accel", func(m *Manifest) { m.Accel = "hvf" }, "accelerator"},
		{"arch", func(m *Manifest) { m.Arch = "riscv64" }, "architecture"},
		{"state escapes", func(m *Manifest) { m.State = "../../etc/passwd" }, "plain file"},
		{"hidden state", func(m *Manifest) { m.State = ".x" }, "plain file"},
		{"disk escapes", func(m *Manifest) { m.Disks[0].File = "/etc/shadow" }, "plain file"},
		{"disk nowhere", func(m *Manifest) { m.Disks[0].File = "" }, "neither"},
		{"disk format", func(m *Manifest) { m.Disks[0].Format = "vmdk" }, "format"},
		{"disk id", func(m *Manifest) { m.Disks[0].ID = "" }, "without id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManifest()
			tt.mod(&m)
			err := m.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSameMachine(t *testing.T) {
	src := baseLaunch()
	srcArgv, _ := buildArgv(src)
	clone := func(mod func(*launch)) []string {
		l := baseLaunch()
		l.Name, l.QMPSock, l.PidFile = "clone,1", "/other/q.sock", "/other/pid"
		l.SerialLog, l.SerialSock = "/other/serial,log", "/other/a.sock"
		l.Disks = []backend.Disk{
			{ID: "root", Path: "/other/root.qcow2", Format: "qcow2"},
			{ID: "config", Path: "/other/config.img", Format: "raw", ReadOnly: true},
		}
		if mod != nil {
			mod(&l)
		}
		argv, err := buildArgv(l)
		if err != nil {
			t.Fatal(err)
		}
		return append(argv, "-incoming", "defer")
	}
	tests := []struct {
		name string
		mod  func(*launch)
		same bool
	}{
		{"paths and name differ", nil, true},
		{"memory", func(l *launch) { l.MemoryMiB = 512 }, false},
		{"cpus", func(l *launch) { l.CPUs = 1 }, false},
		{"accel", func(l *launch) { l.KVM = true }, false},
		{"acpi", func(l *launch) { l.ACPI = false }, false},
		{"cmdline", func(l *launch) { l.Cmdline = "debug" }, false},
		{"kernel", func(l *launch) { l.Kernel = "/k/other" }, false},
		{"disk order", func(l *launch) { l.Disks[0], l.Disks[1] = l.Disks[1], l.Disks[0] }, false},
		{"disk id", func(l *launch) { l.Disks[0].ID = "rootfs" }, false},
		{"readonly", func(l *launch) { l.Disks[1].ReadOnly = false }, false},
		{"missing disk", func(l *launch) { l.Disks = l.Disks[:1] }, false},
		{"transport", func(l *launch) { l.Transport, l.CID = guestcfg.TransportVsock, 5 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sameMachine(srcArgv, clone(tt.mod))
			if (err == nil) != tt.same {
				t.Fatalf("same=%v, err=%v", tt.same, err)
			}
		})
	}
	// Two vsock VMs differ only in their CID.
	v := func(cid uint32) []string {
		l := baseLaunch()
		l.Transport, l.CID = guestcfg.TransportVsock, cid
		a, _ := buildArgv(l)
		return a
	}
	if err := sameMachine(v(3), v(9)); err != nil {
		t.Fatalf("CID must not count: %v", err)
	}
}

func TestBlankKeysKeepsEscapedCommas(t *testing.T) {
	got := blankKeys("id=root,file=/a,,b/root.qcow2,format=qcow2,if=none")
	if want := "id=root,file=*,format=qcow2,if=none"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRestoreWarnings(t *testing.T) {
	m := testManifest()
	if w := RestoreWarnings(m, backend.Spec{Name: "c", ConfigISO: "/c/config.img"}); len(w) != 0 {
		t.Fatalf("plain clone spec warns: %v", w)
	}
	w := RestoreWarnings(m, backend.Spec{CPUs: 4, MemoryMiB: 1024, Kernel: "/other", RootImage: "/img"})
	if len(w) != 4 {
		t.Fatalf("warnings = %q", w)
	}
	if !strings.Contains(w[0], "2 vCPUs") || !strings.Contains(w[1], "256 MiB") {
		t.Fatalf("warnings = %q", w)
	}
}

// qcow2Header builds the first bytes of a qcow2 image with a backing name.
func qcow2Header(backing string) []byte {
	b := make([]byte, 512)
	copy(b, qcow2Magic)
	binary.BigEndian.PutUint32(b[4:], 3)
	if backing != "" {
		binary.BigEndian.PutUint64(b[8:], 104)
		binary.BigEndian.PutUint32(b[16:], uint32(len(backing)))
		copy(b[104:], backing)
	}
	return b
}

func TestParseQcow2Backing(t *testing.T) {
	tests := []struct {
		name, want, err string
		data            []byte
	}{
		{name: "backing", data: qcow2Header("/cache/root.ext4"), want: "/cache/root.ext4"},
		{name: "none", data: qcow2Header("")},
		{name: "raw", data: make([]byte, 512), err: "not a qcow2"},
		{name: "short", data: []byte("QFI"), err: "header"},
		{name: "truncated name", data: qcow2Header("/x")[:105], err: "backing file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseQcow2Backing(bytes.NewReader(tt.data))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func TestSnapshotRefusesWithoutLaunch(t *testing.T) {
	h := &Handle{dir: t.TempDir(), rec: record{Backend: Name}}
	dst := filepath.Join(t.TempDir(), "snap")
	if err := h.Snapshot(t.Context(), dst); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("left a snapshot directory behind")
	}
}

func TestRestoreRefusesBadSnapshot(t *testing.T) {
	snap := t.TempDir()
	m := testManifest()
	m.Kernel = filepath.Join(snap, "missing-kernel")
	m.Initrd = ""
	m.Disks = m.Disks[1:]
	if err := writeManifest(snap, m); err != nil {
		t.Fatal(err)
	}
	spec := backend.Spec{Name: "c", Dir: filepath.Join(t.TempDir(), "c"), ConfigISO: "/dev/null"}
	_, err := (&Backend{}).Restore(t.Context(), spec, snap)
	if err == nil || !strings.Contains(err.Error(), "missing-kernel") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzReadManifest(f *testing.F) {
	good, _ := json.Marshal(testManifest())
	f.Add(good)
	f.Add([]byte(`{"version":1,"backend":"qemu","state":"../x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := ReadManifest(dir)
		if err != nil {
			return
		}
		// Whatever passes validation stays inside the snapshot dir.
		if !localName(m.State) {
			t.Fatalf("state %q escapes", m.State)
		}
		for _, d := range m.Disks {
			if d.File != "" && !localName(d.File) {
				t.Fatalf("disk file %q escapes", d.File)
			}
		}
	})
}

func FuzzParseQcow2Backing(f *testing.F) {
	f.Add(qcow2Header("/cache/root.ext4"))
	f.Add(qcow2Header(""))
	f.Add([]byte("QFI\xfb"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := parseQcow2Backing(bytes.NewReader(b))
		if err == nil && len(name) > qcow2MaxBackingLen {
			t.Fatalf("name of %d bytes", len(name))
		}
	})
}

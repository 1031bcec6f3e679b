package qemu

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
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
		State: stateName, StateBytes: 70 << 10, SourceArgv: argv,
		Memory: memName, MemoryBytes: 80 << 20, MemBackend: true, Capabilities: []string{capEvents, capIgnoreShared},
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
		{"accel", func(m *Manifest) { m.Accel = "whpx" }, "accelerator"},
		{"arch", func(m *Manifest) { m.Arch = "riscv64" }, "architecture"},
		{"state escapes", func(m *Manifest) { m.State = "../../etc/passwd" }, "plain file"},
		{"hidden state", func(m *Manifest) { m.State = ".x" }, "plain file"},
		{"disk escapes", func(m *Manifest) { m.Disks[0].File = "/etc/shadow" }, "plain file"},
		{"disk nowhere", func(m *Manifest) { m.Disks[0].File = "" }, "neither"},
		{"disk format", func(m *Manifest) { m.Disks[0].Format = "vmdk" }, "format"},
		{"disk id", func(m *Manifest) { m.Disks[0].ID = "" }, "without id"},
		{"version 1 (RAM in stream)", func(m *Manifest) {
			m.Version, m.Memory, m.MemoryBytes, m.MemBackend, m.Capabilities = 1, "", 0, false, nil
		}, ""},
		{"version 0", func(m *Manifest) { m.Version = 0 }, "format version"},
		{"memory escapes", func(m *Manifest) { m.Memory = "../mem" }, "plain file"},
		{"memory without backend", func(m *Manifest) { m.MemBackend = false }, "no memory backend"},
		{"memory with RAM in stream", func(m *Manifest) { m.Capabilities = []string{capEvents} }, "saved with RAM"},
		{"unknown capability", func(m *Manifest) { m.Capabilities = append(m.Capabilities, "postcopy-ram") }, "unknown migration capability"},
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
		l.SerialLog, l.SerialSock, l.ConsoleSock = "/other/serial,log", "/other/a.sock", "/other/c,.sock"
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
		{"RAM file appears", func(l *launch) { l.MemPath = "/snap/mem" }, false},
		// The console's backend is host-side; the device in front is not.
		{"console written by QEMU", func(l *launch) { l.ConsoleSock = "" }, true},
		{"no console", func(l *launch) { l.SerialLog = "" }, false},
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
	// A source's own shared RAM file and a clone's private mapping of the
	// snapshot's copy build the same machine; another backend id does not.
	mem := func(path string, share bool, id string) []string {
		l := baseLaunch()
		l.MemPath, l.MemShare = path, share
		a, _ := buildArgv(l)
		for i := range a {
			a[i] = strings.ReplaceAll(a[i], "id="+memBackendID+",", "id="+id+",")
		}
		return a
	}
	if err := sameMachine(mem("/vm/mem", true, "mem"), mem("/snap,x/mem", false, "mem")); err != nil {
		t.Fatalf("RAM file path and sharing must not count: %v", err)
	}
	if err := sameMachine(mem("/vm/mem", true, "mem"), mem("/vm/mem", true, "ram")); err == nil {
		t.Fatal("a renamed RAM backend must count")
	}
}

func TestBlankKeysKeepsEscapedCommas(t *testing.T) {
	got := blankKeys("id=root,file=/a,,b/root.qcow2,format=qcow2,if=none")
	if want := "id=root,file=*,format=*,if=none"; got != want {
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

func TestRestoreMemory(t *testing.T) {
	snap, vmDir := t.TempDir(), t.TempDir()
	m := testManifest()
	if err := writeSparse(filepath.Join(snap, memName), int64(m.MemoryMiB)<<20); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		mod       func(*Manifest)
		wantPath  string
		wantShare bool
		wantErr   string
	}{
		{"RAM file: the snapshot's, private", nil, filepath.Join(snap, memName), false, ""},
		{"RAM in stream from a RAM-file VM: a fresh shared file", func(m *Manifest) { m.Memory = "" }, filepath.Join(vmDir, memFile), true, ""},
		{"version 1: anonymous RAM", func(m *Manifest) { m.Memory, m.MemBackend = "", false }, "", false, ""},
		{"RAM file missing", func(m *Manifest) { m.Memory = "gone" }, "", false, "no such file"},
		{"RAM file of another size", func(m *Manifest) { m.MemoryMiB *= 2 }, "", false, "want"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManifest()
			if tt.mod != nil {
				tt.mod(&m)
			}
			path, share, err := restoreMemory(m, snap, vmDir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if tt.wantPath == filepath.Join(vmDir, memFile) && ownMemFile(path, vmDir) {
				path = tt.wantPath // its own file: in the VM dir or on tmpfs
			}
			if err != nil || path != tt.wantPath || share != tt.wantShare {
				t.Fatalf("got %q share=%v, %v; want %q share=%v", path, share, err, tt.wantPath, tt.wantShare)
			}
		})
	}
}

// TestRestoreFileConsoleSnapshot: a snapshot of a VM whose console QEMU
// wrote to serial.log itself restores into one whose console the supervisor
// reads from a socket; a renamed console chardev is a different machine.
func TestRestoreFileConsoleSnapshot(t *testing.T) {
	src := baseLaunch()
	src.ConsoleSock = ""
	saved, _ := buildArgv(src)
	if !slices.Contains(saved, "file,id=console,path=/vm/serial.log") {
		t.Fatalf("source argv has no file console: %q", saved)
	}
	m := testManifest()
	m.SourceArgv = saved
	l := m.launchFrom()
	l.MemPath, l.MemShare = "/snap/mem", false
	l.Disks = src.Disks
	l.QMPSock, l.PidFile, l.SerialLog, l.SerialSock, l.ConsoleSock = "/c/q", "/c/p", "/c/serial.log", "/c/a", "/c/console.sock"
	clone, err := buildArgv(l)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(clone, "socket,id=console,fd=3,server=on,wait=on") || listenSockets(l)[0] != "/c/console.sock" {
		t.Fatalf("clone argv has no console socket: %q (listen %q)", clone, listenSockets(l))
	}
	src.MemPath, src.MemShare = "/vm/mem", true
	saved, _ = buildArgv(src)
	if err := sameMachine(saved, clone); err != nil {
		t.Fatal(err)
	}
	for i := range clone {
		clone[i] = strings.ReplaceAll(clone[i], "id=console,", "id=tty,")
	}
	if err := sameMachine(saved, clone); err == nil {
		t.Fatal("a renamed console chardev must count")
	}
}

// TestRestoreVersion1Argv: a snapshot written before RAM files rebuilds its
// machine without a memory backend, so its argv still matches the saved one.
func TestRestoreVersion1Argv(t *testing.T) {
	old := baseLaunch()
	argv, _ := buildArgv(old)
	m := testManifest()
	m.Version, m.Memory, m.MemBackend, m.Capabilities, m.SourceArgv = 1, "", false, nil, argv
	l := m.launchFrom()
	var err error
	if l.MemPath, l.MemShare, err = restoreMemory(m, t.TempDir(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	l.Disks = old.Disks
	l.QMPSock, l.PidFile, l.SerialLog, l.SerialSock = "/c/q", "/c/p", "/c/s", "/c/a"
	clone, err := buildArgv(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameMachine(m.SourceArgv, clone); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.caps(), []string{capEvents}) {
		t.Fatalf("version 1 capabilities = %v", m.caps())
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
		if m.Memory != "" && !localName(m.Memory) {
			t.Fatalf("memory file %q escapes", m.Memory)
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

func TestCloneDisk(t *testing.T) {
	saved := t.TempDir()
	small := filepath.Join(saved, "disk-root.qcow2")
	if err := os.WriteFile(small, bytes.Repeat([]byte("layer"), 1000), 0o400); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, format, err := cloneDisk(t.Context(), small, "qcow2", dir, "root")
	if err != nil {
		t.Fatal(err)
	}
	if format != "qcow2" || filepath.Dir(path) != dir {
		t.Fatalf("small disk: %s (%s), want a qcow2 copy in %s", path, format, dir)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("layer"), 1000)) {
		t.Fatalf("copy differs: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy mode %v, want 0600", fi.Mode().Perm())
	}
	// A second clone replaces, never appends to, a leftover file.
	if _, _, err := cloneDisk(t.Context(), small, "qcow2", dir, "root"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 5000 {
		t.Fatalf("recloned size %d", fi.Size())
	}

	// A big saved disk gets an overlay (or, without qemu-img, a sparse copy).
	big := filepath.Join(saved, "disk-data.raw")
	if err := writeSparse(big, copyDiskLimit+1); err != nil {
		t.Fatal(err)
	}
	path, format, err = cloneDisk(t.Context(), big, "raw", dir, "data")
	if err != nil {
		t.Fatal(err)
	}
	if _, lerr := exec.LookPath("qemu-img"); lerr == nil {
		if backing, err := qcow2Backing(path); format != "qcow2" || err != nil || backing != big {
			t.Fatalf("big disk: %s (%s), backing %q, %v; want a qcow2 overlay over %s", path, format, backing, err, big)
		}
	} else if format != "raw" {
		t.Fatalf("big disk without qemu-img: format %s", format)
	}
}

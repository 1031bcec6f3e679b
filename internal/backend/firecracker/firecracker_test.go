package firecracker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
)

func TestParseVersionOutput(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"Firecracker v1.16.1\n\nSupported snapshot data format versions: v10.0.0\n", "1.16.1", ""},
		{"Firecracker v1.17.0-dev", "1.17.0", ""},
		{"firecracker-go 1.0", "", "not a firecracker"},
		{"", "", "not a firecracker"},
		{"Firecracker vX", "", "MAJOR.MINOR.PATCH"},
	}
	for _, tt := range tests {
		v, err := parseVersionOutput(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || v.String() != tt.want {
			t.Errorf("%q: %v %v", tt.in, v, err)
		}
	}
}

func TestInstanceID(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "a_b.c": "a-b-c", "": "mvm-vm", strings.Repeat("x", 80): strings.Repeat("x", 64)} {
		if got := instanceID(in); got != want {
			t.Errorf("instanceID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveDisks(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.ext4")
	os.WriteFile(img, []byte("root"), 0o444)
	cfg := filepath.Join(dir, "config.img")
	os.WriteFile(cfg, []byte("cfg"), 0o600)
	spec := backend.Spec{Dir: dir, RootImage: img, ConfigISO: cfg, Disks: []backend.Disk{{ID: "root", Path: img}, {ID: "data", Path: "/d", Format: "raw"}}}
	disks, err := resolveDisks(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 3 || disks[0].ID != "root" || disks[0].Path == img || disks[1].ID != "data" || disks[2].ID != "config" || !disks[2].ReadOnly {
		t.Fatalf("disks = %+v", disks)
	}
	if b, _ := os.ReadFile(disks[0].Path); string(b) != "root" {
		t.Fatalf("root copy holds %q", b)
	}
	for _, bad := range []backend.Disk{{ID: "x-y", Path: "/d"}, {ID: "q", Path: "/d", Format: "qcow2"}} {
		if _, err := resolveDisks(context.Background(), backend.Spec{Dir: dir, Disks: []backend.Disk{bad}}); err == nil {
			t.Errorf("disk %+v accepted", bad)
		}
	}
}

func TestAvailable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, version string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\necho 'Firecracker v"+version+"'\n"), 0o755)
		return p
	}
	tests := []struct {
		bin, err string
	}{
		{write("new", "1.16.1"), ""},
		{write("old", "1.10.0"), "too old: mvm needs 1.14.0"},
		{filepath.Join(dir, "missing"), "MVM_FIRECRACKER_BIN"},
	}
	for _, tt := range tests {
		t.Setenv(EnvBinary, tt.bin)
		err := (&Backend{}).Available(context.Background())
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: err %v, want %q", tt.bin, err, tt.err)
		}
	}
}

func TestSpecRefusals(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvBinary, "/bin/true")
	k := filepath.Join(dir, "k")
	os.WriteFile(k, []byte("\x7fELF"), 0o644)
	_, err := (&Backend{}).Start(context.Background(), backend.Spec{Name: "x", Dir: dir, Kernel: k,
		NICs: []backend.NIC{{ID: "net0", MAC: "06:00:00:00:00:01", User: &backend.UserNet{}}}})
	if err == nil || !strings.Contains(err.Error(), "TAP devices only") {
		t.Fatalf("user-mode NIC: %v", err)
	}
	if _, err := (&Backend{}).Start(context.Background(), backend.Spec{Name: "x", Dir: "rel"}); err == nil {
		t.Fatal("relative dir accepted")
	}
}

func TestReadManifest(t *testing.T) {
	tests := []struct {
		body, err string
	}{
		{`{"backend":"firecracker","version":"1.16.1","disks":[{"ID":"root","Path":"root.img"}],"agent_port":5252}`, ""},
		{`{"backend":"qemu"}`, "not a firecracker snapshot"},
		{`{"backend":"firecracker","disks":[{"ID":"root","Path":"../../etc/passwd"}]}`, "leaves the VM directory"},
		{`{"backend":"firecracker","disks":[{"ID":"root","Path":"/abs/root.img"}]}`, "leaves the VM directory"},
		{`not json`, "not a firecracker snapshot"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, snapManifest), []byte(tt.body), 0o600)
		_, err := readManifest(dir)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: err %v, want %q", tt.body, err, tt.err)
		}
	}
	if _, err := readManifest(t.TempDir()); err == nil {
		t.Error("empty dir accepted")
	}
}

func TestInDir(t *testing.T) {
	for p, want := range map[string]string{"/vm/root.img": "root.img", "/vm/sub/x": "sub/x", "/other/x": "/other/x", "/vm": "/vm"} {
		if got := inDir("/vm", p); got != want {
			t.Errorf("inDir(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestJailArgv(t *testing.T) {
	j := &jail{Jailer: "/usr/bin/jailer", ID: "mvm-abc", UID: 7, GID: 8, Base: "/vm", Exec: "/usr/bin/firecracker"}
	got := strings.Join(j.argv(2, 256, "--api-sock", "/fc.sock"), " ")
	want := "/usr/bin/jailer --id mvm-abc --exec-file /usr/bin/firecracker --uid 7 --gid 8 --chroot-base-dir /vm --cgroup-version 2 --cgroup cpu.max=200000 100000 --cgroup memory.max=402653184 -- --api-sock /fc.sock"
	if got != want {
		t.Fatalf("argv\n%s\nwant\n%s", got, want)
	}
	if j.Root() != "/vm/firecracker/mvm-abc/root" {
		t.Fatal(j.Root())
	}
	// Never a way to turn seccomp off.
	if strings.Contains(got, "seccomp") {
		t.Fatal("seccomp flag in the jailer argv")
	}
}

func TestPlanJail(t *testing.T) {
	t.Setenv(EnvJailer, "/x/jailer")
	a, _ := planJail("/vms/a", "/bin/fc")
	b, _ := planJail("/vms/b", "/bin/fc")
	if os.Geteuid() != 0 {
		if a != nil {
			t.Fatal("jailed without root")
		}
		return
	}
	if a == nil || b == nil || a.ID == b.ID || a.UID == 0 || a.UID < jailIDBase || a.Base != "/vms/a" {
		t.Fatalf("a=%+v b=%+v", a, b)
	}
	if c, _ := planJail("/vms/a", "/bin/fc"); c.ID != a.ID || c.UID != a.UID {
		t.Fatal("not stable per VM directory")
	}
}

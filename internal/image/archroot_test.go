package image

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// otherArch is the guest arch that is not the host's.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// fakeELF writes a static ELF executable header for goarch followed by
// tail (no code: nothing runs it).
func fakeELF(t *testing.T, path, goarch string, tail []byte) {
	t.Helper()
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(h[16:], uint16(elf.ET_EXEC))
	le.PutUint16(h[18:], uint16(elfMachine[goarch]))
	le.PutUint32(h[20:], 1)
	le.PutUint16(h[52:], 64) // e_ehsize
	le.PutUint16(h[54:], 56) // e_phentsize
	le.PutUint16(h[58:], 64) // e_shentsize
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(h, tail...), 0o755); err != nil {
		t.Fatal(err)
	}
}

// appletTable is busybox's applet_names as it sits in the binary.
var appletTable = []byte("junk\x00[\x00[[\x00ash\x00busybox\x00cat\x00ls\x00mount\x00sh\x00sleep\x00true\x00uname\x00\x00more junk")

// fakeArchTree lays out what scripts/setup-arch.sh unpacks for goarch.
func fakeArchTree(t *testing.T, goarch string) (root string) {
	t.Helper()
	root = t.TempDir()
	t.Setenv("MVM_ARCH_DIR", root)
	tree := filepath.Join(root, goarch)
	rel := "6.1.0-57-cloud-" + goarch
	md := filepath.Join(tree, "lib", "modules", rel)
	if err := os.MkdirAll(filepath.Join(tree, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(md, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "boot", "vmlinuz-"+rel), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(md, "modules.dep"), nil, 0o644)
	var builtin strings.Builder
	for _, m := range guestModules {
		builtin.WriteString("kernel/drivers/" + m + ".ko\n")
	}
	os.WriteFile(filepath.Join(md, "modules.builtin"), []byte(builtin.String()), 0o644)
	fakeELF(t, filepath.Join(tree, "bin", "busybox"), goarch, appletTable)
	return root
}

func TestGuestArchNames(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{"", runtime.GOARCH, ""},
		{"arm64", "arm64", ""},
		{"aarch64", "arm64", ""},
		{"x86_64", "amd64", ""},
		{"riscv64", "", "unsupported guest architecture"},
	}
	for _, tt := range tests {
		got, err := GuestArch(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("GuestArch(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("GuestArch(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestAppletsFromBinary(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, appletTable, 0o644)
	got, err := appletsFromBinary(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"[", "[[", "ash", "busybox", "cat", "ls", "mount", "sh", "sleep", "true", "uname"}
	if !slices.Equal(got, want) {
		t.Fatalf("applets %q, want %q", got, want)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("no table here"), 0o644)
	if _, err := appletsFromBinary(bad); err == nil {
		t.Fatal("a binary without the table gave applets")
	}
}

// A foreign arch's kernel, modules and busybox come from its tree, never
// from the host's /boot, and the agent must be built for it.
func TestResolveInputsForeignArch(t *testing.T) {
	arch := otherArch()
	root := fakeArchTree(t, arch)
	tree := filepath.Join(root, arch)
	agent := filepath.Join(t.TempDir(), "mvm-agent-"+arch)
	fakeELF(t, agent, arch, nil)
	r, err := Resolve("minimal")
	if err != nil {
		t.Fatal(err)
	}
	in, err := resolveInputs(context.Background(), r, t.TempDir(), BuildOptions{Arch: arch, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if in.arch != arch || !strings.HasPrefix(in.kernel.Image, tree) || !strings.HasPrefix(in.busybox, tree) ||
		in.kernel.Release != "6.1.0-57-cloud-"+arch {
		t.Fatalf("inputs: arch %s kernel %+v busybox %s; want them from %s", in.arch, in.kernel, in.busybox, tree)
	}
	applets, err := busyboxApplets(context.Background(), in.busybox)
	if err != nil || !slices.Contains(applets, "sh") || slices.Contains(applets, "busybox") {
		t.Fatalf("applets of the foreign busybox: %q, %v", applets, err)
	}

	// An agent of the host's arch is refused for a foreign image.
	hostAgent := filepath.Join(t.TempDir(), "mvm-agent")
	fakeELF(t, hostAgent, runtime.GOARCH, nil)
	if _, err := resolveInputs(context.Background(), r, t.TempDir(), BuildOptions{Arch: arch, AgentPath: hostAgent}); err == nil || !strings.Contains(err.Error(), "built for") {
		t.Fatalf("host-arch agent for a %s image: err = %v", arch, err)
	}
}

func TestArchTreeMissingNamesSetup(t *testing.T) {
	t.Setenv("MVM_ARCH_DIR", t.TempDir())
	arch := otherArch()
	for name, f := range map[string]func() error{
		"kernel":  func() error { _, err := kernelFor(arch); return err },
		"busybox": func() error { _, err := findBusyboxFor(arch); return err },
	} {
		err := f()
		if err == nil || !strings.Contains(err.Error(), SetupArchCommand+" "+arch) {
			t.Errorf("%s without the %s tree: err = %v, want it to name %s %s", name, arch, err, SetupArchCommand, arch)
		}
	}
}

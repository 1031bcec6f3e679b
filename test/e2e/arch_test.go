package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// archBootTimeout is generous: an arm64 guest under TCG on two shared x86
// cores boots in about 25 s when idle, and CI runs other VMs beside it.
const archBootTimeout = 10 * time.Minute

// foreignArch is the guest architecture that is not the host's.
func foreignArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// TestArch boots the minimal image for the other architecture (arm64 on an
// x86 host) under qemu-system-<arch> with TCG, from the Debian kernel and
// busybox of that arch and an agent built for it, and runs commands in it:
// the guest arch flows from --arch to every layer and is never the host's
// by accident. One VM, so CI time stays small.
func TestArch(t *testing.T) {
	arch := foreignArch()
	ensureArchInputs(t, arch)
	name := "e2e-arch-" + arch
	start := time.Now()
	up := must(t, archBootTimeout, "up", "--backend", "qemu", "--arch", arch, "--name", name, "--timeout", archBootTimeout.String())
	t.Logf("%s guest: up to ready in %.1fs", arch, time.Since(start).Seconds())
	if strings.TrimSpace(up.stdout) != name {
		t.Fatalf("up printed %q, want the name", up.stdout)
	}
	t.Cleanup(func() { mvm(t, time.Minute, "", "rm", "-f", name) })

	want := map[string]string{"arm64": "aarch64", "amd64": "x86_64"}[arch]
	if r := must(t, 2*time.Minute, "exec", name, "--", "uname", "-m"); strings.TrimSpace(r.stdout) != want {
		t.Fatalf("uname -m = %q, want %q", r.stdout, want)
	}
	t.Logf("%s guest: up to first exec in %.1fs", arch, time.Since(start).Seconds())
	cpuinfo := must(t, 2*time.Minute, "exec", name, "--", "cat", "/proc/cpuinfo").stdout
	if arch == "arm64" && !strings.Contains(cpuinfo, "CPU architecture: 8") {
		t.Fatalf("/proc/cpuinfo is not an arm64 CPU's:\n%s", cpuinfo)
	}
	// The agent PID 1 of the guest is the foreign build: its exit code and
	// streams pass through like the host arch's.
	if r := mvm(t, 2*time.Minute, "", "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7"); r.code != 7 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("exec exit/streams: %s", r)
	}

	// The record keeps the arch; QEMU was the arch's own, emulating (TCG).
	if it := ls(t, false)[name]; it.Arch != arch || it.Backend != "qemu" {
		t.Fatalf("ls: arch %q backend %q, want %s on qemu", it.Arch, it.Backend, arch)
	}
	in := must(t, time.Minute, "inspect", name).stdout
	for _, s := range []string{`"arch": "` + arch + `"`, `"accel": "tcg"`, "qemu-system-" + map[string]string{"arm64": "aarch64", "amd64": "x86_64"}[arch]} {
		if !strings.Contains(in, s) {
			t.Fatalf("inspect lacks %s:\n%s", s, in)
		}
	}
	if strings.Contains(in, "-enable-kvm") || strings.Contains(in, `"kvm"`) {
		t.Fatalf("a foreign-arch guest must never use KVM:\n%s", in)
	}

	// Backends that cannot emulate say so instead of booting the wrong arch.
	for _, be := range []string{"docker", "firecracker"} {
		r := mvm(t, time.Minute, "", "up", "--backend", be, "--arch", arch, "--name", name+"-"+be)
		if r.code == 0 || !strings.Contains(r.stderr, "cannot run "+arch+" guests") {
			t.Fatalf("%s with --arch %s: %s", be, arch, r)
		}
	}
	must(t, 2*time.Minute, "rm", "-f", name)
}

// ensureArchInputs makes sure QEMU for arch and its guest inputs are here,
// running the project's own setup when they are not; it skips only when
// that cannot work (no root or sudo, no apt).
func ensureArchInputs(t *testing.T, arch string) {
	t.Helper()
	if strings.Contains(","+os.Getenv("MVM_E2E_SKIP")+",", ",arch,") {
		t.Skip("arch listed in MVM_E2E_SKIP")
	}
	qemuBin := map[string]string{"arm64": "qemu-system-aarch64", "amd64": "qemu-system-x86_64"}[arch]
	archDir := os.Getenv("MVM_ARCH_DIR")
	if archDir == "" {
		archDir = "/var/cache/mvm/arch"
	}
	kernels, _ := filepath.Glob(filepath.Join(archDir, arch, "boot", "vmlinuz-*"))
	if _, err := exec.LookPath(qemuBin); err == nil && len(kernels) > 0 {
		return
	}
	_, aptErr := exec.LookPath("apt-get")
	_, sudoErr := exec.LookPath("sudo")
	if aptErr != nil || (os.Geteuid() != 0 && sudoErr != nil) {
		t.Skipf("needs %s and the %s guest inputs in %s: run scripts/setup-arch.sh %s (make setup does it); cannot here (no apt-get, or neither root nor sudo)", qemuBin, arch, archDir, arch)
	}
	t.Logf("installing the %s guest inputs: scripts/setup-arch.sh %s", arch, arch)
	cmd := exec.Command("../../scripts/setup-arch.sh", arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/setup-arch.sh %s: %v\n%s", arch, err, out)
	}
}

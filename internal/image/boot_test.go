package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// bootScript stands in for the agent: it loads the modules the way the agent
// does, then mounts both drives by label.
const bootScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /etc/mvm/modules); do insmod /lib/modules/$m || echo "FAILED $m"; done
mount -o ro -t ext4 $(findfs LABEL=mvm-root) /newroot && echo ROOT-MOUNTED
cat /newroot/etc/os-release
mkdir /cfg
mount -o ro -t ext4 $(findfs LABEL=mvm-config) /cfg && cat /cfg/mvm.json && echo
echo BOOT-SMOKE-DONE
poweroff -f
`

// TestBootSmokeQEMU boots the built kernel and rootfs under QEMU microvm with
// an initramfs made by the same writer and the same module list, proving the
// modules load in order on the real kernel and both drives mount by label.
func TestBootSmokeQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("needs amd64 (qemu-system-x86_64 microvm)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("needs qemu-system-x86_64 (package qemu-system-x86)")
	}
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	a, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: filepath.Join(dir, "images"), AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	da, _ := debArch(runtime.GOARCH)
	k, err := findKernel(da)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveModules(k.ModulesDir, guestModules, nil); err != nil {
		t.Fatal(err)
	}

	ar := newCPIO()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ar.Add(cpioEntry{Name: "init", Type: cpioRegular, Perm: 0o755, Data: []byte(bootScript)}))
	bb, _ := findBusybox()
	must(ar.Add(cpioEntry{Name: "bin/busybox", Type: cpioRegular, Perm: 0o755, Source: bb}))
	must(ar.Add(cpioEntry{Name: "dev/console", Type: cpioCharDev, Perm: 0o600, Major: 5, Minor: 1}))
	for _, d := range []string{"proc", "sys", "newroot", "sbin", "usr/bin", "usr/sbin"} {
		must(ar.Add(cpioEntry{Name: d, Type: cpioDir, Perm: 0o755}))
	}
	// The module files and list exactly as in the built initrd.
	for _, r := range readCPIO(t, mustRead(t, a.Initrd)) {
		if strings.HasPrefix(r.name, initramfsModulesDir+"/") || r.name == initramfsModulesList {
			must(ar.Add(cpioEntry{Name: r.name, Type: cpioRegular, Perm: 0o644, Data: r.data}))
		}
	}
	initrd := filepath.Join(dir, "test.cpio")
	f, err := os.Create(initrd)
	must(err)
	_, err = ar.WriteTo(f)
	must(err)
	must(f.Close())

	cfgPath := filepath.Join(dir, "config.ext4")
	must(WriteConfigDrive(ctx, cfgPath, &guestcfg.Config{Version: 1, Name: "smoke", Hostname: "smoke",
		Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial}}))

	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm", "-accel", "tcg", "-m", "256",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
		"-kernel", a.Kernel, "-initrd", initrd, "-append", "console=ttyS0 rdinit=/init panic=-1 quiet",
		"-drive", "id=root,file="+a.Rootfs+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=root",
		"-drive", "id=cfg,file="+cfgPath+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=cfg")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil || !strings.Contains(s, "BOOT-SMOKE-DONE") {
		t.Fatalf("qemu: %v\n%s", err, s)
	}
	for _, want := range []string{"ROOT-MOUNTED", `NAME="mvm minimal"`, `"hostname": "smoke"`} {
		if !strings.Contains(s, want) {
			t.Errorf("guest output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "FAILED") {
		t.Errorf("a module failed to load:\n%s", s)
	}

}

package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/firecracker/api"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// startTimeout bounds Start when ctx has no deadline.
const startTimeout = 2 * time.Minute

// maxSockPath is the usable length of a unix socket path.
const maxSockPath = 107

// baseCmdline is our part of the kernel command line: a console on the
// serial port (the VM's log), Firecracker's reboot (a guest reboot ends the
// process), and no slow i8042 probing. Without "pci=off" before 1.13, but
// we need 1.14 anyway.
const baseCmdline = "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd"

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Handle, error) {
	if err := backend.RefuseForeignArch(Name, spec); err != nil {
		return nil, err
	}
	h, err := b.start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start %s on firecracker: %w", spec.Name, err)
	}
	return h, nil
}

func (b *Backend) start(ctx context.Context, spec backend.Spec) (*Handle, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir := spec.Dir
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	kernel, err := elfKernel(spec.Kernel, dir)
	if err != nil {
		return nil, err
	}
	disks, err := resolveDisks(ctx, spec)
	if err != nil {
		return nil, err
	}
	for _, n := range spec.NICs {
		if n.TAP == "" {
			return nil, fmt.Errorf("NIC %s: Firecracker attaches TAP devices only; user-mode networking is not available on this backend (use a bridged network)", n.ID)
		}
		if err := api.CheckID(n.ID); err != nil {
			return nil, fmt.Errorf("NIC: %w", err)
		}
	}
	_, standIn, err := versionOf(ctx, bin)
	if err != nil {
		return nil, err
	}
	var nics []string
	for _, n := range spec.NICs {
		nics = append(nics, n.ID)
	}
	rec := record{
		Backend: Name, Binary: bin, Disks: disks, AgentPort: guestcfg.DefaultVsockPort, NICs: nics, StandIn: standIn,
	}
	cpus, mem := shape(spec)
	rec.CPUs, rec.MemoryMiB = cpus, mem
	if err := rec.layout(dir, bin, spec.Name, cpus, mem); err != nil {
		return nil, err
	}
	files := files{}
	if files.kernel, err = rec.expose(ctx, dir, kernel); err != nil {
		return nil, err
	}
	if spec.Initrd != "" {
		if files.initrd, err = rec.expose(ctx, dir, spec.Initrd); err != nil {
			return nil, err
		}
	}
	if files.serial, err = rec.exposeSerial(ctx, dir, spec.SerialLog); err != nil {
		return nil, err
	}
	rec.DriveNames = map[string]string{}
	for _, d := range disks {
		if rec.DriveNames[d.ID], err = rec.expose(ctx, dir, d.Path); err != nil {
			return nil, err
		}
	}
	if err := writeRecord(dir, rec); err != nil {
		return nil, err
	}
	if err := launch(ctx, dir, rec, spec); err != nil {
		return nil, err
	}
	h := &Handle{dir: dir, rec: rec}
	if err := h.configure(ctx, spec, files, disks); err != nil {
		h.Kill(context.Background())
		return nil, err
	}
	return h, nil
}

// configure waits for the API, checks the version, describes the VM and
// starts it.
func (h *Handle) configure(ctx context.Context, spec backend.Spec, f files, disks []backend.Disk) error {
	c := h.client()
	if err := c.WaitReady(ctx, h.exited(ctx)); err != nil {
		return fmt.Errorf("%w: %s", err, h.logTail())
	}
	v, err := c.CheckVersion(ctx)
	if err != nil {
		return err
	}
	h.rec.Version = v.String()
	if err := writeRecord(h.dir, h.rec); err != nil {
		return err
	}
	cpus, mem := shape(spec)
	if err := c.PutMachineConfig(ctx, api.MachineConfig{VcpuCount: cpus, MemSizeMib: mem}); err != nil {
		return err
	}
	boot := api.BootSource{KernelImagePath: f.kernel, InitrdPath: f.initrd, BootArgs: strings.TrimSpace(baseCmdline + " " + spec.Cmdline)}
	if err := c.PutBootSource(ctx, boot); err != nil {
		return err
	}
	for i, d := range disks {
		// Relative to Firecracker's working directory (the VM directory,
		// or the jail root): the snapshot state records these paths, so
		// a clone restored in its own directory opens its own copies.
		drive := api.Drive{DriveID: d.ID, PathOnHost: h.rec.DriveNames[d.ID], IsRootDevice: i == 0, IsReadOnly: d.ReadOnly}
		if err := c.PutDrive(ctx, drive); err != nil {
			return err
		}
	}
	for _, n := range spec.NICs {
		if err := c.PutNetworkInterface(ctx, api.NetworkInterface{IfaceID: n.ID, HostDevName: n.TAP, GuestMAC: n.MAC}); err != nil {
			return err
		}
	}
	// Relative for the same reason; releases before 1.16 have no
	// vsock_override on load.
	if err := c.PutVsock(ctx, api.Vsock{GuestCID: guestCID, UDSPath: vsockSock}); err != nil {
		return err
	}
	if err := c.PutEntropy(ctx, api.Entropy{}); err != nil {
		return err
	}
	if f.serial != "" {
		if err := c.PutSerial(ctx, api.Serial{SerialOutPath: f.serial}); err != nil {
			return err
		}
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("%w: %s", err, h.logTail())
	}
	return nil
}

// inDir returns p relative to dir when it lies inside it, else p.
func inDir(dir, p string) string {
	if rel, err := filepath.Rel(dir, p); err == nil && rel != "." && filepath.IsLocal(rel) {
		return rel
	}
	return p
}

// exited is closed when the supervisor records the VMM's exit.
func (h *Handle) exited(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if _, err := supervisor.ReadExit(h.dir); err == nil {
				close(ch)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}

// instanceID makes Firecracker's --id (1-64 of [A-Za-z0-9-]) from a name.
func instanceID(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
		if b.Len() == 64 {
			break
		}
	}
	if b.Len() == 0 {
		return "mvm-vm"
	}
	return b.String()
}

func checkSpec(s backend.Spec) error {
	if s.Dir == "" || !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("VM directory must be an absolute path, got %q", s.Dir)
	}
	if s.Kernel == "" {
		return errors.New("no kernel given")
	}
	for what, p := range map[string]string{"kernel": s.Kernel, "initrd": s.Initrd, "config drive": s.ConfigISO} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// prepareDir makes dir ready: no VM runs there and no stale socket is left
// (Firecracker refuses to start on an existing API socket and to bind an
// existing vsock path).
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if p, err := supervisor.ReadPids(dir); err == nil && (p.VMM.Alive() || p.Supervisor.Alive()) {
		return fmt.Errorf("a VM is already running in %s", dir)
	}
	for _, f := range []string{apiSock, vsockSock} {
		os.Remove(filepath.Join(dir, f))
	}
	return nil
}

// elfKernel returns a kernel Firecracker can boot: x86 Firecracker takes
// only an uncompressed ELF vmlinux (bzImage support is unreleased), so a
// compressed image is unpacked once into the VM directory.
func elfKernel(kernel, dir string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	var magic [4]byte
	_, err = f.Read(magic[:])
	f.Close()
	if err == nil && bytes.Equal(magic[:], []byte("\x7fELF")) {
		return kernel, nil
	}
	dst := filepath.Join(dir, vmlinux)
	if ks, err := os.Stat(kernel); err == nil {
		if vs, err := os.Stat(dst); err == nil && vs.ModTime().After(ks.ModTime()) {
			return dst, nil
		}
	}
	if err := image.ExtractVmlinux(kernel, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// resolveDisks returns the drives in attach order: the VM's own raw copy
// of RootImage (Firecracker takes raw files only; the cached image is never
// attached), the spec's other disks, then the read-only config drive.
func resolveDisks(ctx context.Context, spec backend.Spec) ([]backend.Disk, error) {
	var disks []backend.Disk
	if spec.RootImage != "" {
		p := filepath.Join(spec.Dir, "root.img")
		os.Remove(p)
		out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", "--no-preserve=all", spec.RootImage, p).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("copy root image: %w: %s", err, strings.TrimSpace(string(out)))
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return nil, err
		}
		disks = append(disks, backend.Disk{ID: "root", Path: p, Format: "raw"})
	}
	for _, d := range spec.Disks {
		if spec.RootImage != "" && (d.Path == spec.RootImage || d.ID == "root") {
			continue
		}
		if d.Format != "" && d.Format != "raw" {
			return nil, fmt.Errorf("disk %s is %s; Firecracker takes raw images only", d.ID, d.Format)
		}
		disks = append(disks, d)
	}
	if spec.ConfigISO != "" {
		disks = append(disks, backend.Disk{ID: "config", Path: spec.ConfigISO, Format: "raw", ReadOnly: true})
	}
	seen := map[string]bool{}
	for i, d := range disks {
		if d.ID == "" {
			disks[i].ID = fmt.Sprintf("disk%d", i)
		}
		if err := api.CheckID(disks[i].ID); err != nil {
			return nil, fmt.Errorf("disk: %w", err)
		}
		if seen[disks[i].ID] {
			return nil, fmt.Errorf("duplicate disk id %q", disks[i].ID)
		}
		seen[disks[i].ID] = true
	}
	slog.Debug("firecracker disks", "disks", disks)
	return disks, nil
}

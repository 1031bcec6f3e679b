package standin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
)

// QEMURunner runs the guest through the qemu backend in dir (its own VM
// directory), so the stand-in reuses how that backend boots, supervises
// and reaches the agent (virtio-serial here; no vhost-vsock under TCG).
func QEMURunner(dir string) Runner {
	return func(ctx context.Context, cfg Config) (Guest, error) {
		return runQEMU(ctx, dir, cfg)
	}
}

type qemuGuest struct {
	h         backend.Handle
	agentPort uint32
	done      chan struct{}
	once      sync.Once
}

func runQEMU(ctx context.Context, dir string, cfg Config) (Guest, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	spec := backend.Spec{
		Name: cfg.ID, Dir: dir, Kernel: cfg.Kernel, Initrd: cfg.Initrd,
		Cmdline: qemuCmdline(cfg.BootArgs), CPUs: cfg.VCPUs, MemoryMiB: cfg.MemMiB,
		SerialLog: cfg.SerialOut,
	}
	agentPort := uint32(guestcfg.DefaultVsockPort)
	for _, d := range cfg.Drives {
		disk := backend.Disk{ID: d.ID, Path: d.Path, Format: "raw", ReadOnly: d.ReadOnly}
		// The guest was told to serve its agent on vsock, which QEMU
		// under TCG cannot give it; a copy of its config drive tells it
		// virtio-serial instead, the channel the qemu backend relays.
		if gc, format, err := readConfigDrive(ctx, d.Path); err == nil {
			if gc.Transport.VsockPort != 0 {
				agentPort = gc.Transport.VsockPort
			}
			gc.Transport = guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: guestcfg.SerialPortName}
			cp := filepath.Join(dir, "config-"+d.ID+".img")
			if err := image.WriteConfigDrive(ctx, cp, gc, format); err != nil {
				return nil, fmt.Errorf("translate config drive %s: %w", d.ID, err)
			}
			disk.Path = cp
		}
		spec.Disks = append(spec.Disks, disk)
	}
	for _, n := range cfg.NICs {
		mac := n.MAC
		if mac == "" {
			mac = "06:00:00:00:00:01"
		}
		spec.NICs = append(spec.NICs, backend.NIC{ID: n.ID, TAP: n.TAP, MAC: mac})
	}
	be, err := backend.Get(qemu.Name)
	if err != nil {
		return nil, err
	}
	h, err := be.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	g := &qemuGuest{h: h, agentPort: agentPort, done: make(chan struct{})}
	go g.watch()
	return g, nil
}

// qemuCmdline drops what only makes sense on Firecracker: the qemu backend
// sets its own console, reboot and panic handling (microvm ignores
// reboot=k; it needs reboot=t), and Firecracker-only options.
func qemuCmdline(args string) string {
	var keep []string
	for _, a := range strings.Fields(args) {
		k, _, _ := strings.Cut(a, "=")
		switch k {
		case "console", "reboot", "panic", "8250.nr_uarts", "pci":
			continue
		}
		keep = append(keep, a)
	}
	return strings.Join(keep, " ")
}

func (g *qemuGuest) watch() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := g.h.State(ctx)
		cancel()
		if err == nil && (st == backend.StateStopped || st == backend.StateFailed) {
			g.once.Do(func() { close(g.done) })
			return
		}
	}
}

func (g *qemuGuest) Done() <-chan struct{} { return g.done }

func (g *qemuGuest) Pause(ctx context.Context) error {
	p, ok := g.h.(backend.Pauser)
	if !ok {
		return errors.New("qemu handle cannot pause")
	}
	return p.Pause(ctx)
}

func (g *qemuGuest) Resume(ctx context.Context) error {
	p, ok := g.h.(backend.Pauser)
	if !ok {
		return errors.New("qemu handle cannot resume")
	}
	return p.Resume(ctx)
}

// DialAgent reaches the guest's agent port; any other port has no
// listener as far as the stand-in knows.
func (g *qemuGuest) DialAgent(ctx context.Context, port uint32) (net.Conn, error) {
	if port != g.agentPort {
		return nil, fmt.Errorf("nothing listens on guest port %d", port)
	}
	return g.h.DialAgent(ctx)
}

func (g *qemuGuest) Kill() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g.h.Kill(ctx)
}

// ext4 superblock facts for finding the config drive by its label.
const (
	sbOffset    = 1024
	sbMagicOff  = 0x38
	sbLabelOff  = 0x78
	sbLabelSize = 16
)

// readConfigDrive returns the guest config on the drive at path and the
// drive's format (image.WriteConfigDrive's), or an error when it is not a
// config drive.
func readConfigDrive(ctx context.Context, path string) (*guestcfg.Config, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	if guestcfg.IsDrive(f) {
		defer f.Close()
		gc, err := guestcfg.ReadDrive(f)
		return gc, guestcfg.DriveFormat, err
	}
	gc, err := readExt4ConfigDrive(ctx, f, path)
	return gc, "", err
}

// readExt4ConfigDrive reads the older ext4 drive in f (closed on return).
func readExt4ConfigDrive(ctx context.Context, f *os.File, path string) (*guestcfg.Config, error) {
	var sb [sbLabelOff + sbLabelSize]byte
	_, err := f.ReadAt(sb[:], sbOffset)
	f.Close()
	if err != nil {
		return nil, err
	}
	if sb[sbMagicOff] != 0x53 || sb[sbMagicOff+1] != 0xef {
		return nil, errors.New("not ext4")
	}
	if label := string(bytes.TrimRight(sb[sbLabelOff:], "\x00")); label != guestcfg.ConfigLabel {
		return nil, fmt.Errorf("label %q", label)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "cat /"+guestcfg.FileName, path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("debugfs: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return guestcfg.Decode(bytes.NewReader(out))
}

// AgentPort is the guest port the agent serves on.
func (g *qemuGuest) AgentPort() uint32 { return g.agentPort }

// Snapshot saves the guest through the qemu backend.
func (g *qemuGuest) Snapshot(ctx context.Context, dir string) error {
	sn, ok := g.h.(backend.Snapshotter)
	if !ok {
		return errors.New("qemu handle cannot snapshot")
	}
	return sn.Snapshot(ctx, dir)
}

// QEMULoader restores a guest saved by a qemuGuest, in dir.
func QEMULoader(dir string) Loader {
	return func(ctx context.Context, cfg LoadConfig) (Guest, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		spec := backend.Spec{Name: cfg.ID, Dir: dir, SerialLog: cfg.SerialOut}
		for _, d := range cfg.Drives {
			// The qemu snapshot has its own copies of the writable disks;
			// the config drive slot takes the loading process's drive.
			if d.ID == "config" {
				spec.ConfigISO = d.Path
			}
		}
		for _, n := range cfg.NICs {
			mac := n.MAC
			if mac == "" {
				mac = "06:00:00:00:00:01"
			}
			spec.NICs = append(spec.NICs, backend.NIC{ID: n.ID, TAP: n.TAP, MAC: mac})
		}
		saved, err := retarget(cfg.Saved, filepath.Join(dir, "loaded"), cfg.Drives)
		if err != nil {
			return nil, fmt.Errorf("prepare the saved guest: %w", err)
		}
		be, err := backend.Get(qemu.Name)
		if err != nil {
			return nil, err
		}
		r, ok := be.(backend.Restorer)
		if !ok {
			return nil, errors.New("qemu backend cannot restore")
		}
		h, err := r.Restore(ctx, spec, saved)
		if err != nil {
			return nil, err
		}
		g := &qemuGuest{h: h, agentPort: cfg.AgentPort, done: make(chan struct{})}
		go g.watch()
		return g, nil
	}
}

// retarget makes dst a view of the qemu snapshot in src (hard links, or
// symlinks across filesystems) whose writable disks are the loading
// process's drives of the same id, attached as they are. Firecracker's
// clone writes the drive files the state names, which the caller copied
// from the snapshot; the qemu backend would layer an overlay of its own
// over its saved copy instead, and a cold start of the clone would then
// not see what it wrote.
func retarget(src, dst string, drives []Drive) (string, error) {
	m, err := qemu.ReadManifest(src)
	if err != nil {
		return "", err
	}
	os.RemoveAll(dst)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.Name() == qemu.ManifestFile || e.IsDir() {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if err := os.Link(from, to); err != nil {
			if err := os.Symlink(from, to); err != nil {
				return "", err
			}
		}
	}
	for i, d := range m.Disks {
		if d.ReadOnly || d.File == "" {
			continue
		}
		for _, fd := range drives {
			if fd.ID == d.ID && !fd.ReadOnly {
				m.Disks[i] = qemu.SnapshotDisk{ID: d.ID, Format: "raw", Path: fd.Path}
			}
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	return dst, os.WriteFile(filepath.Join(dst, qemu.ManifestFile), b, 0o600)
}

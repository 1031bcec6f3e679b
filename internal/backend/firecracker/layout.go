package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// files are the paths Firecracker is given for what it opens, as it
// resolves them (relative to its working directory).
type files struct {
	kernel, initrd, serial string
}

func shape(spec backend.Spec) (cpus, mem int) {
	cpus, mem = spec.CPUs, spec.MemoryMiB
	if cpus <= 0 {
		cpus = 1
	}
	if mem <= 0 {
		mem = 512
	}
	return cpus, mem
}

// layout decides where Firecracker runs for the VM in dir — jailed when it
// can be — and sets the command line.
func (r *record) layout(dir, bin, name string, cpus, mem int) error {
	j, why := planJail(dir, bin)
	if j == nil {
		slog.Debug("firecracker runs unjailed", "vm", name, "why", why)
		r.Root, r.Unjailed = dir, why
		r.Argv = []string{bin, "--api-sock", filepath.Join(dir, apiSock), "--id", instanceID(name)}
	} else {
		if err := j.prepare(); err != nil {
			return err
		}
		r.Jail, r.Root = j, j.Root()
		r.Argv = j.argv(cpus, mem, "--api-sock", "/"+apiSock)
	}
	if p := filepath.Join(r.Root, vsockSock); len(p) > maxSockPath {
		return fmt.Errorf("VM directory path too long for unix sockets (%d > %d bytes): %s", len(p), maxSockPath, p)
	}
	return nil
}

// expose returns the name Firecracker opens the host file p by: inside
// the VM directory, its path relative to it; in a jail, its name in the
// jail root, where it is linked (the VM's own files) or copied.
func (r *record) expose(ctx context.Context, dir, p string) (string, error) {
	rel := inDir(dir, p)
	if r.Jail == nil {
		return rel, nil
	}
	name := filepath.Base(p)
	return name, r.Jail.put(ctx, p, name, filepath.IsLocal(rel))
}

// exposeSerial is expose for the console log, which must be the same file
// in a jail (a hard link) for the VM's log to show the output.
func (r *record) exposeSerial(ctx context.Context, dir, p string) (string, error) {
	if p == "" || r.Jail == nil {
		return p, nil
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("console log: %w", err)
	}
	f.Close()
	const name = "serial.log"
	dst := filepath.Join(r.Jail.Root(), name)
	os.Remove(dst)
	if err := os.Link(p, dst); err != nil {
		slog.Warn("console log is on another filesystem than the jail; the VM has no serial log", "log", p, "err", err)
		return "", nil
	}
	return name, os.Chown(dst, r.Jail.UID, r.Jail.GID)
}

// sock is the host path of a socket Firecracker creates by name.
func (r *record) sock(dir, name string) string {
	if r.Root == "" {
		return filepath.Join(dir, name)
	}
	return filepath.Join(r.Root, name)
}

// launch starts the supervisor that runs rec.Argv.
func launch(ctx context.Context, dir string, rec record, spec backend.Spec) error {
	cfg := supervisor.Config{
		Argv:   rec.Argv,
		VMMLog: filepath.Join(dir, fcLog),
		// Firecracker removes neither socket when it exits.
		Remove: []string{rec.sock(dir, apiSock), rec.sock(dir, vsockSock)},
	}
	for _, p := range spec.Publish {
		cfg.Publish = append(cfg.Publish, supervisor.Publish{
			Proto:  p.Proto,
			Listen: net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort)),
			Target: net.JoinHostPort(p.GuestIP, strconv.Itoa(p.GuestPort)),
		})
	}
	_, err := supervisor.Launch(ctx, dir, cfg)
	return err
}

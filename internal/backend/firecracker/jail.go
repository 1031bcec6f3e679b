package firecracker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// The jailer.
//
// When mvmctl runs as root and a jailer is found ($MVM_JAILER_BIN, else
// jailer on PATH), Firecracker is started through it: chrooted in
// <dir>/<exec name>/<id>/root (the jailer's layout, with the VM
// directory as --chroot-base-dir so the jail goes with the VM), as a
// uid/gid of its own, in a cgroup v2 of its own limited to the VM's vCPUs
// and memory. Everything Firecracker opens is hard-linked into the jail
// (the VM's own files, owned by the jail's uid) or copied (files the VM
// does not own, such as the cached initrd), and named to the API by paths
// relative to the jail root, its working directory — the same names an
// unjailed Firecracker gets relative to the VM directory, so snapshots
// move between the two. The API socket is /fc.sock inside the jail.
//
// Without root, or without a jailer, Firecracker runs unjailed (logged,
// and reported by security status). Its seccomp filter is on either way.

// EnvJailer names the jailer executable.
const EnvJailer = "MVM_JAILER_BIN"

// jailIDBase is where per-VM jail uids/gids start ("mv" << 16); the low 16
// bits come from the VM directory, so distinct VMs rarely share one.
const jailIDBase = 0x6d760000

// memOverheadMiB is what a VM's cgroup allows above guest memory: the VMM
// itself (a few MiB) and the kernel's page tables for guest RAM.
const memOverheadMiB = 128

type jail struct {
	Jailer string `json:"jailer"`
	ID     string `json:"id"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Base   string `json:"base"`
	Exec   string `json:"exec"` // the firecracker binary the jailer copies in
}

// Root is the directory Firecracker sees as "/".
func (j *jail) Root() string {
	return filepath.Join(j.Base, filepath.Base(j.Exec), j.ID, "root")
}

func jailerBinary() string {
	if p := os.Getenv(EnvJailer); p != "" {
		return p
	}
	p, _ := exec.LookPath("jailer")
	return p
}

// planJail decides whether the VM in dir runs jailed, and how.
func planJail(dir, bin string) (*jail, string) {
	if os.Geteuid() != 0 {
		return nil, "not root: the jailer needs root"
	}
	jb := jailerBinary()
	if jb == "" {
		return nil, "no jailer found (put the jailer of the same release on PATH, or set " + EnvJailer + ")"
	}
	sum := sha256.Sum256([]byte(dir))
	id := "mvm-" + hex.EncodeToString(sum[:6])
	n := jailIDBase + int(binary.BigEndian.Uint16(sum[6:8]))
	return &jail{Jailer: jb, ID: id, UID: n, GID: n, Base: dir, Exec: bin}, ""
}

// argv is the jailer command line that runs Firecracker with our args.
func (j *jail) argv(cpus, memMiB int, fcArgs ...string) []string {
	a := []string{j.Jailer,
		"--id", j.ID, "--exec-file", j.Exec,
		"--uid", strconv.Itoa(j.UID), "--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.Base,
		"--cgroup-version", "2",
		"--cgroup", fmt.Sprintf("cpu.max=%d 100000", cpus*100000),
		"--cgroup", fmt.Sprintf("memory.max=%d", int64(memMiB+memOverheadMiB)<<20),
		"--"}
	return append(a, fcArgs...)
}

// prepare makes an empty jail root owned by the jail's user.
func (j *jail) prepare() error {
	top := filepath.Join(j.Base, filepath.Base(j.Exec))
	if err := os.RemoveAll(top); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := os.MkdirAll(j.Root(), 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	for _, d := range []string{filepath.Join(top, j.ID), j.Root()} {
		if err := os.Chown(d, j.UID, j.GID); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	return nil
}

// put makes src available in the jail as name: a hard link when src is
// the VM's own file (it then belongs to the jail's user), else a copy.
func (j *jail) put(ctx context.Context, src, name string, own bool) error {
	dst := filepath.Join(j.Root(), name)
	os.Remove(dst)
	if own {
		if err := os.Link(src, dst); err != nil {
			if err := copySparse(ctx, src, dst); err != nil {
				return fmt.Errorf("jail: %w", err)
			}
		}
	} else if err := copySparse(ctx, src, dst); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := os.Chown(dst, j.UID, j.GID); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}

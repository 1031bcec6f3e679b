package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fixedTime is the clock every reproducible filesystem is made under and the
// timestamp of every inode in it (2000-01-01T00:00:00Z).
var fixedTime = time.Unix(946684800, 0).UTC()

// mke2fsConf pins the ext4 feature set so the host's /etc/mke2fs.conf cannot
// change our images. orphan_file is left out for kernels before 5.15.
// Inode tables are zeroed at mkfs time so the guest's ext4lazyinit thread
// does not write to the VM's disk after boot.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	lazy_itable_init = false
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// mkfsSpec describes one mke2fs run over a populated directory.
type mkfsSpec struct {
	Dir      string // contents (mke2fs -d)
	Out      string // image file; must not exist
	Label    string
	UUID     string // also the directory hash seed; empty = random
	Size     int64  // bytes, multiple of 4096
	Features string // extra -O list, e.g. "^has_journal"
	// Reproducible runs mke2fs under a fixed clock (faketime, when present)
	// and rewrites owner and times of every inode in Paths afterwards.
	Reproducible bool
	Paths        []string // absolute in-image paths to normalise ("/", "/bin/sh", ...)
	// Owners are the paths in Paths owned by someone other than root:root.
	Owners map[string]owner
}

// lookTool finds an e2fsprogs/system tool, also in the sbin directories a
// non-root PATH often lacks.
func lookTool(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install package %s", name, pkg)
}

// faketimeArgv prefixes argv with a frozen-clock faketime when available;
// mke2fs stamps crtime and superblock times from the wall clock otherwise.
func faketimeArgv(argv []string) ([]string, bool) {
	ft, err := exec.LookPath("faketime")
	if err != nil {
		return argv, false
	}
	return append([]string{ft, "-f", fixedTime.Format("2006-01-02 15:04:05")}, argv...), true
}

func makeExt4(ctx context.Context, s mkfsSpec) error {
	mkfs, err := lookTool("mkfs.ext4", "e2fsprogs")
	if err != nil {
		return err
	}
	if s.Size <= 0 || s.Size%4096 != 0 {
		return fmt.Errorf("mkfs %s: size %d is not a positive multiple of 4096", s.Out, s.Size)
	}
	conf, err := os.CreateTemp("", "mvm-mke2fs-*.conf")
	if err != nil {
		return fmt.Errorf("mkfs: %w", err)
	}
	defer os.Remove(conf.Name())
	if _, err := conf.WriteString(mke2fsConf); err != nil {
		conf.Close()
		return fmt.Errorf("mkfs: %w", err)
	}
	if err := conf.Close(); err != nil {
		return fmt.Errorf("mkfs: %w", err)
	}

	argv := []string{mkfs, "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "16384", "-m", "0",
		"-L", s.Label}
	ext := "root_owner=0:0"
	if s.UUID != "" {
		argv = append(argv, "-U", s.UUID)
		ext += ",hash_seed=" + s.UUID
	}
	argv = append(argv, "-E", ext)
	if s.Features != "" {
		argv = append(argv, "-O", s.Features)
	}
	argv = append(argv, "-d", s.Dir, s.Out, strconv.FormatInt(s.Size/1024, 10)+"k")
	frozen := false
	if s.Reproducible {
		argv, frozen = faketimeArgv(argv)
	}
	env := append(os.Environ(), "MKE2FS_CONFIG="+conf.Name(), "TZ=UTC", "LC_ALL=C",
		"E2FSPROGS_FAKE_TIME="+strconv.FormatInt(fixedTime.Unix(), 10))
	if err := run(ctx, env, argv...); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w", s.Out, err)
	}
	if s.Reproducible {
		if err := normaliseInodes(ctx, s.Out, s.Paths, s.Owners, frozen, env); err != nil {
			return err
		}
	}
	return nil
}

// normaliseInodes sets owner root and every timestamp to fixedTime on the
// given paths. mke2fs copies uid/gid, atime and ctime from the staging tree;
// ctime cannot be set from user space and atime moves when mke2fs reads the
// files, so they are rewritten in the image with debugfs.
func normaliseInodes(ctx context.Context, img string, paths []string, owners map[string]owner, frozen bool, env []string) error {
	debugfs, err := lookTool("debugfs", "e2fsprogs")
	if err != nil {
		return err
	}
	ts := "@" + strconv.FormatInt(fixedTime.Unix(), 10)
	var script bytes.Buffer
	done := make(map[string]bool, len(paths))
	for _, p := range paths {
		if done[p] {
			continue
		}
		done[p] = true
		// debugfs takes double-quoted arguments; it has no escapes.
		if p == "" || p[0] != '/' || strings.ContainsAny(p, "\t\n\r\"\\") {
			return fmt.Errorf("normalise %s: unsupported path %q", img, p)
		}
		o := owners[p]
		for _, f := range []string{"uid " + strconv.Itoa(o.uid), "gid " + strconv.Itoa(o.gid),
			"atime " + ts, "ctime " + ts, "mtime " + ts, "crtime " + ts} {
			fmt.Fprintf(&script, "sif \"%s\" %s\n", p, f)
		}
	}
	cmds, err := os.CreateTemp("", "mvm-debugfs-*.cmds")
	if err != nil {
		return fmt.Errorf("normalise %s: %w", img, err)
	}
	defer os.Remove(cmds.Name())
	if _, err := cmds.Write(script.Bytes()); err != nil {
		cmds.Close()
		return fmt.Errorf("normalise %s: %w", img, err)
	}
	if err := cmds.Close(); err != nil {
		return fmt.Errorf("normalise %s: %w", img, err)
	}
	argv := []string{debugfs, "-w", "-f", cmds.Name(), img}
	if frozen {
		argv, _ = faketimeArgv(argv)
	}
	stderr, err := runStderr(ctx, env, argv...)
	if err != nil {
		return fmt.Errorf("normalise %s: %w", img, err)
	}
	// debugfs exits 0 even when a command fails; failures go to stderr.
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") {
			continue
		}
		return fmt.Errorf("normalise %s: debugfs: %s", img, line)
	}
	return nil
}

// run executes argv, returning its stderr in the error on failure.
func run(ctx context.Context, env []string, argv ...string) error {
	_, err := runStderr(ctx, env, argv...)
	return err
}

func runStderr(ctx context.Context, env []string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(ctxErr, err)
		}
		if msg != "" {
			return stderr.String(), fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, msg)
		}
		return stderr.String(), fmt.Errorf("%s: %w", filepath.Base(argv[0]), err)
	}
	return stderr.String(), nil
}

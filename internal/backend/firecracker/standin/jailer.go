package standin

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// JailerMain is the stand-in for Firecracker's jailer (run as "jailer"):
// it checks the jailer's command line as the jailer does, builds its
// layout — <chroot-base-dir>/<exec file name>/<id>/root with dev/ and
// run/, the exec file copied in, its pid in <name>.pid, everything owned
// by --uid:--gid — and execs the copy inside it, passing --id. It does not
// chroot, drop privileges or apply cgroups (the guest's QEMU runs outside
// any jail): the stand-in Firecracker instead resolves every absolute
// path it is given inside the jail root and refuses files the jail's
// user could not use, which is what a chrooted, unprivileged Firecracker
// would see.
func JailerMain(args []string, stderr io.Writer) int {
	if err := jailer(args); err != nil {
		fmt.Fprintln(stderr, "jailer:", err)
		return 1
	}
	return 0 // not reached: jailer execs
}

var jailID = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func jailer(args []string) error {
	fs := flag.NewFlagSet("jailer", flag.ContinueOnError)
	id := fs.String("id", "", "VM id")
	execFile := fs.String("exec-file", "", "firecracker binary")
	uid := fs.Int("uid", -1, "uid")
	gid := fs.Int("gid", -1, "gid")
	base := fs.String("chroot-base-dir", "/srv/jailer", "chroot base")
	netns := fs.String("netns", "", "network namespace")
	cgVersion := fs.String("cgroup-version", "1", "cgroup version")
	fs.String("parent-cgroup", "", "parent cgroup")
	var cgroups, limits multi
	fs.Var(&cgroups, "cgroup", "FILE=VALUE")
	fs.Var(&limits, "resource-limit", "RESOURCE=VALUE")
	fs.Bool("daemonize", false, "daemonize")
	fs.Bool("new-pid-ns", false, "new pid namespace")
	var fcArgs []string
	for i, a := range args {
		if a == "--" {
			args, fcArgs = args[:i], args[i+1:]
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case os.Geteuid() != 0:
		return errors.New("must run as root")
	case !jailID.MatchString(*id):
		return fmt.Errorf("invalid --id %q: 1-64 of letters, digits and '-'", *id)
	case *execFile == "":
		return errors.New("--exec-file is required")
	case *uid < 0 || *gid < 0:
		return errors.New("--uid and --gid are required")
	case *cgVersion != "1" && *cgVersion != "2":
		return fmt.Errorf("invalid --cgroup-version %q", *cgVersion)
	case !filepath.IsAbs(*base):
		return fmt.Errorf("--chroot-base-dir %q must be absolute", *base)
	}
	for _, c := range cgroups {
		k, v, ok := strings.Cut(c, "=")
		if !ok || v == "" || !strings.Contains(k, ".") {
			return fmt.Errorf("invalid --cgroup %q: want FILE=VALUE", c)
		}
	}
	for _, l := range limits {
		k, v, ok := strings.Cut(l, "=")
		if _, err := strconv.ParseUint(v, 10, 64); !ok || err != nil || (k != "fsize" && k != "no-file") {
			return fmt.Errorf("invalid --resource-limit %q", l)
		}
	}
	if *netns != "" {
		if _, err := os.Stat(*netns); err != nil {
			return fmt.Errorf("--netns: %w", err)
		}
	}
	st, err := os.Stat(*execFile)
	if err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("--exec-file %q is not a file", *execFile)
	}
	name := filepath.Base(*execFile)
	root := filepath.Join(*base, name, *id, "root")
	for _, d := range []string{root, filepath.Join(root, "dev"), filepath.Join(root, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, *uid, *gid); err != nil {
			return err
		}
	}
	exe := filepath.Join(root, name)
	if err := copyExec(*execFile, exe); err != nil {
		return err
	}
	if err := os.Chown(exe, *uid, *gid); err != nil {
		return err
	}
	if err := os.WriteFile(exe+".pid", []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	argv := append([]string{name}, fcArgs...)
	argv = append(argv, "--id", *id, "--standin-root", root, "--standin-owner", strconv.Itoa(*uid))
	return syscall.Exec(exe, argv, os.Environ())
}

func copyExec(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	os.Remove(dst)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

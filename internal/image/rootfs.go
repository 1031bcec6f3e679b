package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// skippedApplets are busybox applets left out of the minimal rootfs. Without
// an init of its own the image keeps the agent as PID 1.
var skippedApplets = map[string]bool{"init": true, "linuxrc": true}

// findBusybox locates a static busybox on the host.
func findBusybox() (string, error) {
	p := "/bin/busybox"
	if _, err := os.Stat(p); err != nil {
		lp, lerr := exec.LookPath("busybox")
		if lerr != nil {
			return "", fmt.Errorf("busybox not found: install package busybox-static")
		}
		p = lp
	}
	if err := checkStatic(p); err != nil {
		return "", fmt.Errorf("%w (install package busybox-static)", err)
	}
	return p, nil
}

// busyboxApplets asks busybox for its applet list.
func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	var names []string
	if checkArch(busybox, runtime.GOARCH) != nil {
		// A foreign arch's busybox cannot run here: read its table instead.
		var err error
		if names, err = appletsFromBinary(busybox); err != nil {
			return nil, err
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, busybox, "--list").Output()
		if err != nil {
			return nil, fmt.Errorf("list busybox applets: %w", err)
		}
		names = strings.Fields(string(out))
	}
	var applets []string
	for _, a := range names {
		if a == "busybox" || skippedApplets[a] || strings.ContainsAny(a, "/\\") {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("busybox %s lists no applets", busybox)
	}
	sort.Strings(applets)
	return applets, nil
}

// stager builds the rootfs staging tree and remembers every path in it.
type stager struct {
	root   string
	paths  []string         // in-image absolute paths
	owners map[string]owner // paths not owned by root:root
	bytes  int64            // disk use estimate
}

func (s *stager) note(p string, size int64) {
	s.paths = append(s.paths, p)
	s.bytes += (size+4095)/4096*4096 + 4096 // data blocks + a share of metadata
}

func (s *stager) dir(p string, perm fs.FileMode) error {
	host := filepath.Join(s.root, p)
	if err := os.Mkdir(host, 0o700); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	if err := os.Chmod(host, perm); err != nil { // Chmod: not subject to umask
		return fmt.Errorf("stage %s: %w", p, err)
	}
	s.note(p, 0)
	return nil
}

func (s *stager) file(p string, data []byte, perm fs.FileMode) error {
	host := filepath.Join(s.root, p)
	if err := os.WriteFile(host, data, 0o600); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	if err := os.Chmod(host, perm); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	s.note(p, int64(len(data)))
	return nil
}

func (s *stager) copy(p, src string, perm fs.FileMode) error {
	host := filepath.Join(s.root, p)
	if err := copyFile(src, host); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	if err := os.Chmod(host, perm); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	fi, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	s.note(p, fi.Size())
	return nil
}

func (s *stager) symlink(p, target string) error {
	if err := os.Symlink(target, filepath.Join(s.root, p)); err != nil {
		return fmt.Errorf("stage %s: %w", p, err)
	}
	s.paths = append(s.paths, p)
	s.bytes += 256 // fast symlink: inode only
	return nil
}

// fixTimes gives every staged path the fixed time (symlinks themselves, not
// their targets).
func (s *stager) fixTimes() error {
	ts := []unix.Timespec{unix.NsecToTimespec(fixedTime.UnixNano()), unix.NsecToTimespec(fixedTime.UnixNano())}
	for _, p := range s.paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(s.root, p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stage %s: set times: %w", p, err)
		}
	}
	return nil
}

// stageMinimal lays out the busybox + agent root filesystem under root.
func stageMinimal(ctx context.Context, root, busybox, agent string) (*stager, error) {
	applets, err := busyboxApplets(ctx, busybox)
	if err != nil {
		return nil, err
	}
	s := &stager{root: root, owners: map[string]owner{}}
	s.note("/", 0)
	dirs := []struct {
		p    string
		perm fs.FileMode
	}{
		{"/bin", 0o755}, {"/sbin", 0o755}, {"/etc", 0o755}, {"/dev", 0o755}, {"/proc", 0o555},
		{"/sys", 0o555}, {"/run", 0o755}, {"/tmp", 0o777 | fs.ModeSticky}, {"/mnt", 0o755},
		{"/mnt/config", 0o755}, {"/root", 0o700}, {"/home", 0o755}, {"/var", 0o755},
		{"/var/tmp", 0o777 | fs.ModeSticky}, {"/usr", 0o755},
	}
	for _, d := range dirs {
		if err := s.dir(d.p, d.perm); err != nil {
			return nil, err
		}
	}
	if err := s.copy("/bin/busybox", busybox, 0o755); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := s.symlink("/bin/"+a, "busybox"); err != nil {
			return nil, err
		}
	}
	// One bin directory; /usr/bin and /usr/sbin exist for #!/usr/bin/env.
	if err := s.symlink("/usr/bin", "../bin"); err != nil {
		return nil, err
	}
	if err := s.symlink("/usr/sbin", "../sbin"); err != nil {
		return nil, err
	}
	if err := s.copy("/sbin/mvm-agent", agent, 0o755); err != nil {
		return nil, err
	}
	files := []struct {
		p, data string
		perm    fs.FileMode
	}{
		{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644},
		{"/etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644},
		{"/etc/shadow", "root:*:10957:0:99999:7:::\nnobody:*:10957:0:99999:7:::\n", 0o640},
		{"/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644},
		{"/etc/hostname", "mvm\n", 0o644}, // the agent sets the real name from the config drive
		{"/etc/os-release", "NAME=\"mvm minimal\"\nID=mvm\nPRETTY_NAME=\"mvm minimal (busybox)\"\nHOME_URL=\"https://github.com/mvm-dev/mvm\"\n", 0o644},
		{"/etc/profile", "export PATH=/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n", 0o644},
	}
	for _, f := range files {
		if err := s.file(f.p, []byte(f.data), f.perm); err != nil {
			return nil, err
		}
	}
	if err := s.fixTimes(); err != nil {
		return nil, err
	}
	return s, nil
}

// buildRootfs stages the recipe's root filesystem and formats it at dst.
func buildRootfs(ctx context.Context, dst, workDir, digestHex string, r *Recipe, in *inputs) error {
	stage := filepath.Join(workDir, "rootfs")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return fmt.Errorf("stage rootfs: %w", err)
	}
	defer os.RemoveAll(stage)
	var (
		s   *stager
		err error
	)
	switch r.Rootfs.Source {
	case RootfsMinimal:
		s, err = stageMinimal(ctx, stage, in.busybox, in.agent)
	case RootfsDebian:
		s, err = stageTarball(ctx, stage, in.base.Path)
		if err == nil {
			err = addAgent(s, in.agent)
		}
	case RootfsOCI:
		s, in.baseEnv, err = stageOCI(ctx, stage, workDir, in.oci, in.arch, in.progressFn())
		if err == nil {
			err = addAgent(s, in.agent)
		}
	case RootfsNix:
		s, err = stageNixRootfs(ctx, stage, in.nix.rootfs)
		if err == nil {
			err = s.ensureMountPoints()
		}
		if err == nil {
			err = addAgent(s, in.agent)
		}
	default:
		err = fmt.Errorf("rootfs source %q not supported", r.Rootfs.Source)
	}
	if err != nil {
		return err
	}
	if err := addRecipeContent(s, r, in); err != nil {
		return err
	}
	paths := append([]string{"/lost+found"}, s.paths...)
	return makeExt4(ctx, mkfsSpec{
		Dir:          stage,
		Out:          dst,
		Label:        guestcfg.RootLabel,
		UUID:         uuidFrom(digestHex),
		Size:         rootfsSize(s.bytes, r.Rootfs.FreeMiB),
		Reproducible: true,
		Paths:        paths,
		Owners:       s.owners,
	})
}

// rootfsSize leaves freeMiB for users on top of the content, plus room for
// the journal, inode tables and group metadata. The file is sparse, so the
// headroom costs nothing until written.
func rootfsSize(content, freeMiB int64) int64 {
	const mib = 1 << 20
	size := content + content/8 + freeMiB*mib + 48*mib
	const align = 16 * mib
	return (size + align - 1) / align * align
}

// uuidFrom derives a stable RFC 4122-shaped UUID from a hex digest.
func uuidFrom(hexDigest string) string {
	h := sha256.Sum256([]byte("mvm-fs-uuid:" + hexDigest))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// copyFile copies src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

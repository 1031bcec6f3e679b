package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// secretsSource names the agent's tmpfs in the mount table, so the agent
// only ever wipes and unmounts a mount of its own at proto.SecretsDir.
const secretsSource = "mvm-secrets"

// secretsTmpfsOpts: room for the largest request even at one page per
// file, and a few inodes to spare; root-only until the files are in.
var secretsTmpfsOpts = fmt.Sprintf("mode=0700,uid=0,gid=0,size=%dk,nr_inodes=%d",
	(proto.MaxSecretsTotal+proto.MaxSecrets*4096)>>10+64, proto.MaxSecrets+16)

// shmDir is the container fallback's tmpfs, and shmPrefix its directories.
const (
	shmDir    = "/dev/shm"
	shmPrefix = "mvm-secrets-"
)

// imageServicesDir holds the image's services (guestinit.ServicesDir), whose
// user is the default owner of secrets.
const imageServicesDir = "/etc/mvm/services.d"

// maxMountInfo bounds what is read of /proc/self/mountinfo.
const maxMountInfo = 4 << 20

// secretsMu serialises the secrets operation: there is one secrets
// directory per machine, whatever the number of servers.
var secretsMu sync.Mutex

// secrets installs the request's set of secrets in place of any earlier
// one: the old files are zeroed and removed, a fresh tmpfs is mounted at
// proto.SecretsDir and every file is created there with O_EXCL|O_NOFOLLOW.
// An empty set leaves nothing behind (nothing mounted, no files). Values are
// never logged, and the agent's copies are zeroed once written.
func (s *Server) secrets(w *wire, args json.RawMessage) error {
	req, err := proto.ParseSecrets(args)
	clear(args) // the request's bytes: the values, base64
	defer req.Wipe()
	if err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "%v", err))
	}
	secretsMu.Lock()
	defer secretsMu.Unlock()
	st := &secretStore{sys: &s.sys, root: s.cfg.CopyRoot, passwd: s.cfg.PasswdFile, group: s.cfg.GroupFile}
	res, err := st.install(req)
	if err != nil {
		if e, ok := proto.AsError(err); ok {
			return w.fail(e)
		}
		return w.fail(proto.Errorf(proto.CodeInternal, "secrets: %v", err))
	}
	req.Wipe()
	// Hand the garbage that held values (request frames, TLS buffers, an
	// earlier call's) back to the kernel before answering: a guest booted
	// with init_on_free=1 (the host asks for it when it gives secrets)
	// zeroes freed pages, so a snapshot taken right after the empty set
	// finds no copy in the agent's memory.
	runtime.GC()
	debug.FreeOSMemory()
	err = respond(w, res)
	s.log.Info("secrets installed", "names", strings.Join(req.Names(), ","), "storage", res.Storage, "removed", res.Removed, "note", res.Note)
	return err
}

// secretStore does the work of one secrets operation. Paths are the guest's
// joined to root (CopyRoot: "/" in a guest, a temp dir in tests).
type secretStore struct {
	sys           *guestSys
	root          string
	passwd, group string
}

func (st *secretStore) path(guest string) string { return filepath.Join(st.root, guest) }

// install replaces the installed set with req's.
func (st *secretStore) install(req proto.SecretsRequest) (*proto.SecretsResult, error) {
	// Owners first: a request naming an unknown user changes nothing.
	owners, note, err := st.owners(req.Secrets)
	if err != nil {
		return nil, err
	}
	res := &proto.SecretsResult{Dir: proto.SecretsDir}
	if res.Removed, err = st.drop(); err != nil {
		return nil, fmt.Errorf("remove the earlier secrets: %w", err)
	}
	if len(req.Secrets) == 0 {
		return res, nil
	}
	dir, storage, why, err := st.prepare()
	if err != nil {
		return nil, err
	}
	res.Storage, res.Note = storage, joinNotes(why, note)
	files, err := writeSecrets(dir, req.Secrets, owners)
	if err != nil {
		// All or nothing: a half-installed set would look like success to
		// whatever reads one of the files.
		if _, derr := st.drop(); derr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, derr)
		}
		return nil, err
	}
	res.Files = files
	return res, nil
}

func joinNotes(notes ...string) string {
	return strings.Join(slices.DeleteFunc(notes, func(s string) bool { return s == "" }), "; ")
}

// owners resolves who owns each secret: its own user, else the image's.
func (st *secretStore) owners(secrets []proto.Secret) ([]*account, string, error) {
	if len(secrets) == 0 {
		return nil, "", nil
	}
	def, note := "root", ""
	need := slices.ContainsFunc(secrets, func(s proto.Secret) bool { return s.User == "" })
	if need {
		var err error
		if def, note, err = st.imageUser(); err != nil {
			return nil, "", err
		}
	}
	out := make([]*account, len(secrets))
	for i, s := range secrets {
		spec := s.User
		if spec == "" {
			spec = def
		}
		a, err := lookupUser(spec, st.passwd, st.group)
		if err != nil {
			return nil, "", proto.Errorf(proto.CodeBadRequest, "secret %s: owner: %v", s.Name, err)
		}
		out[i] = a
	}
	return out, note, nil
}

// imageUser is the user the image's services run as when they agree on
// one other than root; otherwise root.
func (st *secretStore) imageUser() (string, string, error) {
	svcs, err := LoadServices(st.path(imageServicesDir))
	if err != nil {
		return "", "", proto.Errorf(proto.CodeInternal, "image services (for the secrets' owner): %v", err)
	}
	var users []string
	for _, sv := range svcs {
		u := sv.User
		if u != "" && u != "root" && u != "0" && !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	switch len(users) {
	case 0:
		return "root", "", nil
	case 1:
		return users[0], "", nil
	default:
		return "root", fmt.Sprintf("the image's services run as %s: secrets are owned by root", strings.Join(users, ", ")), nil
	}
}

// prepare makes the empty directory the files go into: a fresh tmpfs at
// SecretsDir, or, where mounting is not allowed (a container without
// CAP_SYS_ADMIN), a new 0700 directory on the machine's own /dev/shm tmpfs
// with SecretsDir a symlink to it. Nothing else: secrets never go to a disk
// or into a bind mount from the host.
func (st *secretStore) prepare() (dir, storage, note string, err error) {
	target := st.path(proto.SecretsDir)
	if err := makeMountPoint(target); err != nil {
		return "", "", "", err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	merr := st.sys.mount(secretsSource, target, "tmpfs", flags, secretsTmpfsOpts)
	if merr == nil {
		mounts, err := st.mounts()
		if err != nil {
			return "", "", "", err
		}
		if top, ok := topMount(mounts, target); !ok || !top.ours() {
			// Whatever is there now is not what we mounted.
			_ = st.sys.unmount(target, unix.MNT_DETACH)
			return "", "", "", fmt.Errorf("%s: the mount table does not show the agent's tmpfs after mounting it", proto.SecretsDir)
		}
		return target, proto.SecretsTmpfs, "", nil
	}
	if !errors.Is(merr, unix.EPERM) {
		return "", "", "", fmt.Errorf("mount a tmpfs at %s: %w", proto.SecretsDir, merr)
	}
	_ = os.Remove(target) // the empty mount point, in place of the symlink
	dir, err = st.shmFallback()
	if err != nil {
		return "", "", "", proto.Errorf(proto.CodeUnavailable, "cannot mount a tmpfs at %s (%v: a container needs CAP_SYS_ADMIN) and %v; refusing to put secrets anywhere else", proto.SecretsDir, merr, err)
	}
	if err := os.Symlink(dir, target); err != nil {
		_, _ = wipeDir(dir)
		_ = os.Remove(dir)
		return "", "", "", fmt.Errorf("link %s: %w", proto.SecretsDir, err)
	}
	guest := shmDir + "/" + filepath.Base(dir)
	return dir, proto.SecretsShm, fmt.Sprintf("could not mount a tmpfs at %s (%v; no CAP_SYS_ADMIN); the secrets are in %s on this container's own /dev/shm tmpfs, which %s links to", proto.SecretsDir, merr, guest, proto.SecretsDir), nil
}

// makeMountPoint leaves target an empty directory of its own: a symlink
// there (an earlier fallback's) is replaced; anything else is refused.
func makeMountPoint(target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("secrets: %w", err)
	case fi.Mode()&os.ModeSymlink != 0:
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	case fi.IsDir():
		ents, err := os.ReadDir(target)
		if err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
		if len(ents) > 0 {
			return proto.Errorf(proto.CodeBusy, "%s exists and is not empty (the image's own files?); refusing to hide or mix with them", proto.SecretsDir)
		}
		return nil
	default:
		return proto.Errorf(proto.CodeBusy, "%s exists and is not a directory", proto.SecretsDir)
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// shmFallback makes a fresh 0700 directory on /dev/shm, after checking that
// /dev/shm is a tmpfs mounted whole (a bind mount from the host shows the
// host directory as its root).
func (st *secretStore) shmFallback() (string, error) {
	shm := st.path(shmDir)
	mounts, err := st.mounts()
	if err != nil {
		return "", err
	}
	m, ok := topMount(mounts, shm)
	if !ok || m.fstype != "tmpfs" || m.root != "/" {
		return "", fmt.Errorf("%s is not a tmpfs of this machine's own", shmDir)
	}
	dir, err := os.MkdirTemp(shm, shmPrefix) // 0700, a name nobody could have prepared
	if err != nil {
		return "", fmt.Errorf("%s: %w", shmDir, err)
	}
	return dir, nil
}

// drop zeroes and removes whatever an earlier operation installed, and
// unmounts the agent's tmpfs. It reports how many files it removed.
func (st *secretStore) drop() (int, error) {
	target := st.path(proto.SecretsDir)
	removed := 0
	// Our tmpfs, perhaps more than one if an earlier agent was stopped
	// half-way; never a mount that is not ours.
	for range 8 {
		mounts, err := st.mounts()
		if err != nil {
			return removed, err
		}
		top, ok := topMount(mounts, target)
		if !ok || !top.ours() {
			break
		}
		n, err := wipeDir(target)
		removed += n
		if err != nil {
			return removed, err
		}
		if err := st.sys.unmount(target, 0); err != nil {
			// Busy: a process holds a file open. The files are already
			// zeroed and unlinked; detach the mount from the tree.
			if err := st.sys.unmount(target, unix.MNT_DETACH); err != nil {
				return removed, fmt.Errorf("unmount %s: %w", proto.SecretsDir, err)
			}
		}
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return removed, nil
	case err != nil:
		return removed, err
	case fi.Mode()&os.ModeSymlink != 0:
		link, err := os.Readlink(target)
		if err != nil {
			return removed, err
		}
		// Only a directory the fallback made; a foreign link is just removed.
		if filepath.Dir(link) == st.path(shmDir) && strings.HasPrefix(filepath.Base(link), shmPrefix) {
			if li, err := os.Lstat(link); err == nil && li.IsDir() {
				n, err := wipeDir(link)
				removed += n
				if err != nil {
					return removed, err
				}
				if err := os.Remove(link); err != nil {
					return removed, err
				}
			}
		}
		return removed, os.Remove(target)
	case fi.IsDir():
		_ = os.Remove(target) // the empty mount point; a non-empty one is not ours
	}
	return removed, nil
}

// writeSecrets creates every file in dir (through a descriptor of dir, with
// O_CREAT|O_EXCL|O_NOFOLLOW, so nothing is written through a link or over a
// file someone placed), then gives dir its final owner and mode: 0700 root
// when root owns every secret, 0750 root:GROUP when the other owners share
// GROUP, 0711 (no listing) when they do not.
func writeSecrets(dir string, secrets []proto.Secret, owners []*account) ([]proto.SecretFile, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", proto.SecretsDir, err)
	}
	defer unix.Close(dfd)
	var groups []uint32
	files := make([]proto.SecretFile, len(secrets))
	for i, s := range secrets {
		a := owners[i]
		if err := writeSecret(dfd, s, a); err != nil {
			return nil, fmt.Errorf("secret %s: %w", s.Name, err)
		}
		files[i] = proto.SecretFile{Name: s.Name, UID: a.uid, GID: a.gid, Mode: s.Mode, Size: len(s.Data)}
		if (a.uid != 0 || s.Mode&0o040 != 0) && !slices.Contains(groups, a.gid) {
			groups = append(groups, a.gid)
		}
	}
	gid, mode := uint32(0), uint32(0o700)
	switch len(groups) {
	case 0:
	case 1:
		gid, mode = groups[0], 0o750
	default:
		mode = 0o711
	}
	if err := unix.Fchown(dfd, 0, int(gid)); err != nil {
		return nil, fmt.Errorf("chown %s: %w", proto.SecretsDir, err)
	}
	if err := unix.Fchmod(dfd, mode); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", proto.SecretsDir, err)
	}
	return files, nil
}

func writeSecret(dfd int, s proto.Secret, a *account) error {
	fd, err := unix.Openat(dfd, s.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), s.Name)
	defer f.Close()
	if _, err := f.Write(s.Data); err != nil {
		return err
	}
	if err := f.Chown(int(a.uid), int(a.gid)); err != nil {
		return err
	}
	if err := f.Chmod(os.FileMode(s.Mode)); err != nil {
		return err
	}
	return f.Close()
}

// wipeDir overwrites every regular file in dir with zeros, so the tmpfs
// pages (and a snapshot of the guest's memory) keep no value, then removes
// every entry. Links are removed, never followed.
func wipeDir(dir string) (int, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(dfd), dir)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", dir, err)
	}
	n := 0
	var errs []error
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // gone meanwhile
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if err := zeroFile(dfd, name, st.Size); err != nil {
				errs = append(errs, fmt.Errorf("zero %s: %w", name, err))
			}
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
				continue
			}
			n++
		case unix.S_IFDIR: // not ours, but it is in our directory
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				errs = append(errs, err)
			}
		default:
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			}
		}
	}
	return n, errors.Join(errs...)
}

func zeroFile(dfd int, name string, size int64) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	zeros := make([]byte, min(size, 64<<10))
	for off := int64(0); off < size; {
		k, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
		if err != nil {
			return err
		}
		off += int64(k)
	}
	return f.Close()
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	root   string // the mounted filesystem's directory that appears here
	point  string
	fstype string
	source string
}

// ours reports whether m is the agent's secrets tmpfs.
func (m mountEntry) ours() bool { return m.fstype == "tmpfs" && m.source == secretsSource }

func (st *secretStore) mounts() ([]mountEntry, error) {
	b, err := st.sys.mountInfo()
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return parseMountInfo(b), nil
}

// topMount returns the last (uppermost) mount at point.
func topMount(ms []mountEntry, point string) (mountEntry, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].point == point {
			return ms[i], true
		}
	}
	return mountEntry{}, false
}

func readMountInfo() ([]byte, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxMountInfo))
}

// parseMountInfo parses proc(5) mountinfo lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
//
// Malformed lines are skipped. Paths are unescaped (\040 is a space).
func parseMountInfo(b []byte) []mountEntry {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+3 {
			continue
		}
		out = append(out, mountEntry{
			root:   unescapeMount(f[3]),
			point:  unescapeMount(f[4]),
			fstype: f[sep+1],
			source: unescapeMount(f[sep+2]),
		})
	}
	return out
}

// unescapeMount undoes the kernel's octal escapes (\ooo) in mount fields.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

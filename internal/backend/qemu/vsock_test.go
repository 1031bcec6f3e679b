package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// Two users other than us, for the tests that play one.
const (
	otherUID  = 65534
	otherUID2 = 65533
)

// sharedTmp is a stand-in for /tmp: world-writable and sticky, and the
// place an old mvmctl kept its CID registry.
func sharedTmp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mvm-cid-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// useRegistryRoot gives the CID allocator tmp as its temporary directory
// (where an old mvmctl kept its registry) and a fake kernel: no
// /dev/vhost-vsock here, and tests must not bind real CIDs.
func useRegistryRoot(t *testing.T, tmp string) *fakeVsock {
	t.Helper()
	t.Setenv("TMPDIR", tmp)
	return useFakeVsock(t)
}

// fakeVsock stands in for the kernel's table of bound CIDs.
type fakeVsock struct {
	bound  map[uint32]bool
	probes []uint32
	err    error // returned by every probe when set
}

func useFakeVsock(t *testing.T) *fakeVsock {
	t.Helper()
	k := &fakeVsock{bound: map[uint32]bool{}}
	oldProbe, oldDraw := cidProbe, cidDraw
	cidProbe = k.probe
	t.Cleanup(func() { cidProbe, cidDraw = oldProbe, oldDraw })
	return k
}

func (k *fakeVsock) probe(cid uint32) error {
	k.probes = append(k.probes, cid)
	switch {
	case k.err != nil:
		return k.err
	case cid < minCID || cid >= maxCID:
		return syscall.EINVAL
	case k.bound[cid]:
		return fmt.Errorf("set guest CID %d: %w", cid, syscall.EADDRINUSE)
	}
	return nil
}

// drawFrom makes cidDraw yield cids, then random ones.
func drawFrom(cids ...uint32) {
	rnd := cidDraw
	cidDraw = func() uint32 {
		if len(cids) == 0 {
			return rnd()
		}
		c := cids[0]
		cids = cids[1:]
		return c
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to play another user")
	}
}

// victimDir is a directory of ours holding one file, for attackers to aim at.
func victimDir(t *testing.T) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func checkVictim(t *testing.T, dir, file string) {
	t.Helper()
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("victim file now %q (%v); want it untouched", b, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("victim directory now holds %v; want only secret", names)
	}
}

// TestCIDRegistryIgnoresPlantedDirSymlink: another user makes the shared
// registry path a symlink to a directory of ours before we first run.
func TestCIDRegistryIgnoresPlantedDirSymlink(t *testing.T) {
	needRoot(t)
	tmp := sharedTmp(t)
	useRegistryRoot(t, tmp)
	vdir, vfile := victimDir(t)
	link := filepath.Join(tmp, "mvm-vsock-cids")
	if err := os.Symlink(vdir, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	if _, err := allocateCID(); err != nil {
		t.Logf("allocateCID: %v", err) // refusing is fine; following is not
	}
	checkVictim(t, vdir, vfile)
}

// TestCIDRegistryIgnoresPlantedFiles: another user pre-creates the shared
// registry directory and plants symlinks where claim files and the lock go.
func TestCIDRegistryIgnoresPlantedFiles(t *testing.T) {
	needRoot(t)
	tmp := sharedTmp(t)
	useRegistryRoot(t, tmp)
	vdir, vfile := victimDir(t)
	reg := filepath.Join(tmp, "mvm-vsock-cids")
	if err := os.Mkdir(reg, 0o777); err != nil {
		t.Fatal(err)
	}
	names := []string{".lock"}
	for cid := 3; cid < 40; cid++ {
		names = append(names, strconv.Itoa(cid))
	}
	for _, n := range names {
		target := vfile
		if n == ".lock" {
			target = filepath.Join(vdir, "planted-lock")
		}
		p := filepath.Join(reg, n)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(reg, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	if _, err := allocateCID(); err != nil {
		t.Logf("allocateCID: %v", err)
	}
	checkVictim(t, vdir, vfile)
}

// TestCIDClaimsHoldNoPaths: nothing the allocator leaves where other users
// can read it names the VM's directory (which gives away user and VM names).
func TestCIDClaimsHoldNoPaths(t *testing.T) {
	tmp := sharedTmp(t)
	useRegistryRoot(t, tmp)
	if _, err := allocateCID(); err != nil {
		t.Fatalf("allocateCID: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(tmp, "mvm-vsock-cids")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a shared registry exists: %v", err)
	}
	filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("secret-project-vm")) {
			t.Errorf("%s reveals the VM's path: %q", p, b)
		}
		return nil
	})
}

// TestCIDTwoUsers runs the allocator as two different users in turn, the
// way two people on one host start their first VMs: neither may stop the
// other, and the second must not get the CID the first one's VM holds.
func TestCIDTwoUsers(t *testing.T) {
	needRoot(t)
	tmp := sharedTmp(t)
	bin := testBinaryFor(t, otherUID, otherUID2)
	first := allocateAs(t, bin, tmp, otherUID, "")
	second := allocateAs(t, bin, tmp, otherUID2, first)
	if first == second {
		t.Fatalf("both users got CID %s", first)
	}
}

// testBinaryFor copies this test binary where the given users can run it.
func testBinaryFor(t *testing.T, uids ...int) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mvm-cid-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	bin := filepath.Join(dir, "qemu.test")
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// allocateAs runs TestCIDHelperProcess as uid with tmp as its TMPDIR and
// returns the CID it got. bound lists CIDs other VMs hold.
func allocateAs(t *testing.T, bin, tmp string, uid int, bound string) string {
	t.Helper()
	home := filepath.Join(tmp, "home-"+strconv.Itoa(uid))
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, uid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestCIDHelperProcess$", "-test.count=1")
	cmd.Env = []string{"MVM_CID_HELPER=1", "TMPDIR=" + tmp, "HOME=" + home, "MVM_TEST_BOUND_CIDS=" + bound, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("allocate as uid %d: %v\n%s", uid, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "CID="); ok {
			return v
		}
	}
	t.Fatalf("allocate as uid %d printed no CID:\n%s", uid, out)
	return ""
}

// TestCIDHelperProcess is the child of TestCIDTwoUsers.
func TestCIDHelperProcess(t *testing.T) {
	if os.Getenv("MVM_CID_HELPER") != "1" {
		t.Skip("helper process for TestCIDTwoUsers")
	}
	// The kernel is the only state two users share: one fake, told what
	// the other user's VM holds, and the first draw collides with it.
	k := useFakeVsock(t)
	if b := os.Getenv("MVM_TEST_BOUND_CIDS"); b != "" {
		n, err := strconv.ParseUint(b, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		k.bound[uint32(n)] = true
		drawFrom(uint32(n))
	}
	cid, err := allocateCID()
	if err != nil {
		t.Fatalf("allocateCID as uid %d: %v", os.Getuid(), err)
	}
	os.Stdout.WriteString("CID=" + strconv.FormatUint(uint64(cid), 10) + "\n")
}

// TestCIDSkipsCIDsInUse: a CID the kernel reports bound (a VM of anyone's)
// is never returned; the allocator draws again.
func TestCIDSkipsCIDsInUse(t *testing.T) {
	k := useFakeVsock(t)
	k.bound[3], k.bound[4], k.bound[1000] = true, true, true
	drawFrom(3, 4, 1000, 77)
	cid, err := allocateCID()
	if err != nil {
		t.Fatal(err)
	}
	if cid != 77 || len(k.probes) != 4 {
		t.Fatalf("got CID %d after probes %v; want 77 after 3, 4, 1000", cid, k.probes)
	}
}

func TestCIDDrawsValidCIDs(t *testing.T) {
	k := useFakeVsock(t)
	seen := map[uint32]bool{}
	for range 1000 {
		cid, err := allocateCID()
		if err != nil {
			t.Fatal(err)
		}
		if cid < minCID || cid >= maxCID {
			t.Fatalf("CID %d out of range", cid)
		}
		seen[cid] = true
	}
	if len(seen) < 990 || len(k.probes) != 1000 {
		t.Fatalf("%d distinct CIDs in 1000 draws, %d probes", len(seen), len(k.probes))
	}
}

func TestCIDGivesUp(t *testing.T) {
	k := useFakeVsock(t)
	k.err = fmt.Errorf("set guest CID: %w", syscall.EADDRINUSE)
	if _, err := allocateCID(); err == nil || len(k.probes) != cidTries {
		t.Fatalf("all in use: %v after %d probes", err, len(k.probes))
	}
	k.probes, k.err = nil, fmt.Errorf("open %s: %w", vhostVsock, syscall.EACCES)
	if _, err := allocateCID(); !errors.Is(err, syscall.EACCES) || len(k.probes) != 1 {
		t.Fatalf("device refused: %v after %d probes; want EACCES at once", err, len(k.probes))
	}
}

// TestProbeCIDRealDevice checks the ioctl against the kernel, when this
// host has vhost-vsock: a CID bound elsewhere is reported in use, and the
// probe itself keeps nothing bound.
func TestProbeCIDRealDevice(t *testing.T) {
	fd, err := syscall.Open(vhostVsock, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no usable %s: %v", vhostVsock, err)
	}
	defer syscall.Close(fd)
	var cid uint32
	for range cidTries {
		if cid = cidDraw(); probeCID(cid) == nil {
			break
		}
	}
	if err := probeCID(cid); err != nil {
		t.Fatalf("probe left CID %d bound: %v", cid, err)
	}
	v := uint64(cid)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&v))); e != 0 {
		t.Fatalf("bind %d: %v", cid, e)
	}
	if err := probeCID(cid); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("probe of a bound CID: %v, want EADDRINUSE", err)
	}
}

package image

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// needBuildTools skips unless this host can build the minimal image and
// returns a fake agent (a copy of the static busybox).
func needBuildTools(t *testing.T) string {
	t.Helper()
	da, err := debArch(runtime.GOARCH)
	if err != nil {
		t.Skipf("needs a host architecture with a Debian kernel flavour: %v", err)
	}
	if _, err := findKernel(da); err != nil {
		t.Skipf("needs an installed Debian kernel: %v", err)
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := lookTool(tool, "e2fsprogs"); err != nil {
			t.Skipf("needs %s (package e2fsprogs)", tool)
		}
	}
	bb, err := findBusybox()
	if err != nil {
		t.Skipf("needs a static busybox: %v", err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := copyFile(bb, agent); err != nil {
		t.Fatal(err)
	}
	return agent
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	p, _ := lookTool("debugfs", "e2fsprogs")
	out, err := exec.Command(p, "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", req, err)
	}
	return string(out)
}

func fsck(t *testing.T, img string) {
	t.Helper()
	p, _ := lookTool("e2fsck", "e2fsprogs")
	if out, err := exec.Command(p, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func TestEnsureMinimal(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cacheA := filepath.Join(t.TempDir(), "images")
	var stages []string
	start := time.Now()
	a, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cacheA, AgentPath: agent,
		Progress: func(s string) { stages = append(stages, s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold build %v, stages %v", time.Since(start), stages)

	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(a.Digest) {
		t.Fatalf("digest %q", a.Digest)
	}
	if a.Dir != filepath.Join(cacheA, strings.TrimPrefix(a.Digest, "sha256:")) || a.Name != "minimal" ||
		!a.Console || a.DefaultCPUs < 1 || a.DefaultMemMiB < 128 || a.KernelRelease == "" {
		t.Fatalf("artifacts %+v", a)
	}
	for _, p := range []string{a.Kernel, a.Initrd, a.Rootfs, filepath.Join(a.Dir, manifestFile)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want read-only", p, fi.Mode())
		}
	}
	if l, err := os.Readlink(filepath.Join(cacheA, "by-name", "minimal")); err != nil || filepath.Base(l) != filepath.Base(a.Dir) {
		t.Errorf("by-name link %q, %v", l, err)
	}
	if left, _ := filepath.Glob(filepath.Join(cacheA, ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary dirs left: %v", left)
	}

	checkRootfs(t, a.Rootfs)
	checkInitrd(t, a.Initrd, agent)

	// Cache hit: same digest, no rebuild.
	start = time.Now()
	b, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cacheA, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if hit := time.Since(start); hit > 2*time.Second { // generous; typical is tens of ms
		t.Errorf("cache hit took %v", hit)
	} else {
		t.Logf("cache hit %v", hit)
	}
	if *b != *a {
		t.Errorf("cache hit returned %+v, want %+v", b, a)
	}

	// Reproducibility: a fresh cache gives byte-identical artifacts.
	cacheB := filepath.Join(t.TempDir(), "images")
	c, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cacheB, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest != a.Digest {
		t.Fatalf("digest differs across caches: %s vs %s", c.Digest, a.Digest)
	}
	for _, pair := range [][2]string{{a.Initrd, c.Initrd}, {a.Kernel, c.Kernel}, {a.Rootfs, c.Rootfs}} {
		x, _ := os.ReadFile(pair[0])
		y, _ := os.ReadFile(pair[1])
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between builds", filepath.Base(pair[0]))
		}
	}

	// A different agent is a different image.
	if err := os.WriteFile(agent, append(mustRead(t, agent), 0), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cacheA, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest == a.Digest {
		t.Error("changing the agent kept the digest")
	}
	if l, _ := os.Readlink(filepath.Join(cacheA, "by-name", "minimal")); filepath.Base(l) != filepath.Base(d.Dir) {
		t.Errorf("by-name link %q not updated to %s", l, d.Dir)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkRootfs(t *testing.T, img string) {
	t.Helper()
	fsck(t, img)
	stats := debugfs(t, img, "stats")
	if !strings.Contains(stats, "Filesystem volume name:   "+guestcfg.RootLabel+"\n") {
		t.Errorf("rootfs label wrong:\n%s", stats)
	}
	// Superblock times come from the fixed clock, not the wall clock.
	for _, f := range []string{"Filesystem created", "Last write time"} {
		if !regexp.MustCompile(f + `:\s+Sat Jan  1 00:00:00 2000\n`).MatchString(stats) {
			t.Errorf("%s is not the fixed time:\n%s", f, stats)
		}
	}
	m := regexp.MustCompile(`Free blocks:\s+(\d+)`).FindStringSubmatch(stats)
	if m == nil {
		t.Fatalf("no free block count in:\n%s", stats)
	}
	if free, _ := strconv.ParseInt(m[1], 10, 64); free*4096 < 256<<20 {
		t.Errorf("only %d MiB free", free*4096>>20)
	}
	agentStat := debugfs(t, img, "stat /sbin/mvm-agent")
	for _, want := range []string{"Mode:  0755", "User:     0   Group:     0", "mtime: 0x386d4380:00000000",
		"ctime: 0x386d4380:00000000", "crtime: 0x386d4380:00000000"} {
		if !strings.Contains(agentStat, want) {
			t.Errorf("/sbin/mvm-agent: missing %q in\n%s", want, agentStat)
		}
	}
	if s := debugfs(t, img, "stat /tmp"); !strings.Contains(s, "Mode:  01777") {
		t.Errorf("/tmp not sticky:\n%s", s)
	}
	bin := debugfs(t, img, "ls -l /bin")
	for _, want := range []string{" busybox", " sh", " ls", " mount"} {
		if !strings.Contains(bin, want+"\n") && !strings.Contains(bin, want+" ") {
			t.Errorf("/bin lacks%s", want)
		}
	}
	if strings.Contains(bin, " init\n") {
		t.Error("/bin/init present; the agent must stay PID 1")
	}
	if s := debugfs(t, img, "stat /bin/sh"); !strings.Contains(s, `Fast link dest: "busybox"`) {
		t.Errorf("/bin/sh is not a link to busybox:\n%s", s)
	}
	if s := debugfs(t, img, "cat /etc/passwd"); !strings.HasPrefix(s, "root:x:0:0:") {
		t.Errorf("/etc/passwd: %q", s)
	}
}

func checkInitrd(t *testing.T, img, agent string) {
	t.Helper()
	recs := readCPIO(t, mustRead(t, img))
	byName := map[string]cpioRecord{}
	for _, r := range recs {
		byName[r.name] = r
	}
	if r := byName["init"]; r.mode != 0o100755 || !bytes.Equal(r.data, mustRead(t, agent)) {
		t.Errorf("init: mode %o, %d bytes", r.mode, len(r.data))
	}
	if r := byName["dev/console"]; r.mode != 0o20600 || r.rmajor != 5 || r.rminor != 1 {
		t.Errorf("dev/console: %+v", r)
	}
	for _, d := range []string{"dev", "proc", "sys", "newroot", "run", "tmp", "etc"} {
		if byName[d].mode&0o170000 != cpioDir {
			t.Errorf("%s is not a directory", d)
		}
	}
	list := strings.Fields(string(byName[initramfsModulesList].data))
	if len(list) == 0 {
		t.Fatal("empty module list")
	}
	pos := map[string]int{}
	for i, f := range list {
		pos[f] = i
		r, ok := byName[initramfsModulesDir+"/"+f]
		if !ok || !bytes.HasPrefix(r.data, []byte("\x7fELF")) {
			t.Errorf("module %s missing or not ELF", f)
		}
	}
	// Dependencies before users, where they are modules on this kernel.
	for _, dep := range [][2]string{{"virtio.ko", "virtio_blk.ko"}, {"virtio_ring.ko", "virtio.ko"},
		{"failover.ko", "net_failover.ko"}, {"net_failover.ko", "virtio_net.ko"}} {
		i, ok1 := pos[dep[0]]
		j, ok2 := pos[dep[1]]
		if ok1 && ok2 && i > j {
			t.Errorf("%s loads after %s: %v", dep[0], dep[1], list)
		}
	}
	var m manifest
	entry := filepath.Dir(img)
	if err := json.Unmarshal(mustRead(t, filepath.Join(entry, manifestFile)), &m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.Modules, " ") != strings.Join(list, " ") {
		t.Errorf("manifest modules %v, initrd %v", m.Modules, list)
	}
}

func TestEnsureConcurrentBuildsOnce(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache := filepath.Join(t.TempDir(), "images")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		builds int
		digest = map[string]bool{}
	)
	for range 3 {
		wg.Go(func() {
			a, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cache, AgentPath: agent,
				Progress: func(s string) {
					if s == "rootfs" {
						mu.Lock()
						builds++
						mu.Unlock()
					}
				}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			digest[a.Digest] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if builds != 1 || len(digest) != 1 {
		t.Errorf("%d builds, %d digests; want 1 and 1", builds, len(digest))
	}
}

func TestEnsureRebuildsIncompleteEntry(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache := filepath.Join(t.TempDir(), "images")
	a, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a.Dir, manifestFile)); err != nil {
		t.Fatal(err)
	}
	rebuilt := false
	b, err := Ensure(ctx, "minimal", BuildOptions{CacheDir: cache, AgentPath: agent,
		Progress: func(s string) { rebuilt = rebuilt || s == "rootfs" }})
	if err != nil {
		t.Fatal(err)
	}
	if !rebuilt || b.Digest != a.Digest {
		t.Errorf("rebuilt=%v digest %s vs %s", rebuilt, b.Digest, a.Digest)
	}
}

func TestEnsureErrors(t *testing.T) {
	ctx := context.Background()
	dyn := ""
	for _, p := range []string{"/bin/ls", "/usr/bin/env"} {
		if checkStatic(p) != nil {
			dyn = p
			break
		}
	}
	tests := []struct {
		name, image string
		opts        BuildOptions
		wantErr     string
	}{
		{"unknown", "nope", BuildOptions{CacheDir: t.TempDir()}, "unknown image \"nope\""},
		{"no cache dir", "minimal", BuildOptions{AgentPath: "/bin/busybox"}, "cache directory"},
		{"no agent", "minimal", BuildOptions{CacheDir: t.TempDir()}, "agent binary path"},
		{"unknown arch", "minimal", BuildOptions{CacheDir: t.TempDir(), AgentPath: "/x", Arch: "riscv64"}, `no Debian kernel flavour known for architecture "riscv64"`},
	}
	if dyn != "" {
		tests = append(tests, struct {
			name, image string
			opts        BuildOptions
			wantErr     string
		}{"dynamic agent", "minimal", BuildOptions{CacheDir: t.TempDir(), AgentPath: dyn}, "dynamically linked"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Ensure(ctx, tt.image, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestKnown(t *testing.T) {
	if got := strings.Join(Known(), ","); got != "http,minimal,postgres,python,worker" {
		t.Errorf("Known() = %s", got)
	}
}

func TestEnsureHTTPAndLocalRecipe(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache := filepath.Join(t.TempDir(), "images")
	a, err := Ensure(ctx, "http", BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	fsck(t, a.Rootfs)
	var sv GuestService
	if err := json.Unmarshal([]byte(debugfs(t, a.Rootfs, "cat /etc/mvm/services.d/httpd.json")), &sv); err != nil ||
		sv.Name != "httpd" || sv.User != "root" || strings.Join(sv.Command, " ") != "/bin/httpd -f -p 80 -h /srv/www" {
		t.Errorf("service %+v, %v", sv, err)
	}
	var hc GuestHealthCheck
	if err := json.Unmarshal([]byte(debugfs(t, a.Rootfs, "cat /etc/mvm/health.d/http.json")), &hc); err != nil ||
		hc.IntervalMS != 5000 || hc.TimeoutMS != 2000 {
		t.Errorf("health %+v, %v", hc, err)
	}
	if s := debugfs(t, a.Rootfs, "cat /srv/www/index.html"); !strings.Contains(s, "It works") {
		t.Errorf("index.html = %q", s)
	}

	// A recipe file with a src file next to it; the src content is an input.
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "hello.sh"), "#!/bin/sh\necho hello\n")
	mustWrite(t, filepath.Join(dir, "r.toml"), `name = "local"
[[files]]
path = "/usr/local/bin/hello"
src = "hello.sh"
mode = "4755"
[env]
B = "2"
A = "1"
`)
	r, err := LoadRecipe(filepath.Join(dir, "r.toml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	fsck(t, b.Rootfs)
	if s := debugfs(t, b.Rootfs, "stat /usr/local/bin/hello"); !strings.Contains(s, "Mode:  04755") {
		t.Errorf("setuid mode lost:\n%s", s)
	}
	var gi GuestImage
	if err := json.Unmarshal([]byte(debugfs(t, b.Rootfs, "cat /etc/mvm/image.json")), &gi); err != nil ||
		gi.Name != "local" || strings.Join(gi.Env, ",") != "A=1,B=2" {
		t.Errorf("image.json %+v, %v", gi, err)
	}
	mustWrite(t, filepath.Join(dir, "hello.sh"), "#!/bin/sh\necho changed\n")
	c, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == b.Digest {
		t.Error("changing a src file kept the digest")
	}
}

package server

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// fakeMounts stands in for mount(2), umount(2) and /proc/self/mountinfo:
// a mount only adds a line to the table, so tests never mount on the host
// and the directory stays the plain directory it was.
type fakeMounts struct {
	mu      sync.Mutex
	table   []mountEntry
	err     error                           // returned by mount
	hook    func(target string)             // runs after a successful mount
	busy    int                             // this many plain unmounts fail with EBUSY
	calls   []string                        // "mount SOURCE TARGET FSTYPE FLAGS DATA", "umount TARGET FLAGS"
	badShow func([]mountEntry) []mountEntry // rewrites the table as read
}

func (m *fakeMounts) install(sys *guestSys) {
	sys.mount = m.mount
	sys.unmount = m.unmount
	sys.mountInfo = m.info
}

func (m *fakeMounts) mount(source, target, fstype string, flags uintptr, data string) error {
	m.mu.Lock()
	m.calls = append(m.calls, fmt.Sprintf("mount %s %s %s %#x %s", source, target, fstype, flags, data))
	if m.err != nil {
		m.mu.Unlock()
		return m.err
	}
	m.table = append(m.table, mountEntry{root: "/", point: target, fstype: fstype, source: source})
	hook := m.hook
	m.mu.Unlock()
	if hook != nil {
		hook(target)
	}
	return nil
}

func (m *fakeMounts) unmount(target string, flags int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, fmt.Sprintf("umount %s %#x", target, flags))
	if flags&unix.MNT_DETACH == 0 && m.busy > 0 {
		m.busy--
		return unix.EBUSY
	}
	for i := len(m.table) - 1; i >= 0; i-- {
		if m.table[i].point == target {
			m.table = append(m.table[:i], m.table[i+1:]...)
			return nil
		}
	}
	return unix.EINVAL
}

func (m *fakeMounts) info() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.table
	if m.badShow != nil {
		t = m.badShow(t)
	}
	var b bytes.Buffer
	esc := strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`)
	for i, e := range t {
		fmt.Fprintf(&b, "%d 1 0:%d %s %s rw,nosuid shared:1 - %s %s rw\n", i+20, i+20, esc.Replace(e.root), esc.Replace(e.point), e.fstype, esc.Replace(e.source))
	}
	return b.Bytes(), nil
}

func (m *fakeMounts) mounted(point string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := topMount(m.table, point)
	return ok
}

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\npostgres:x:102:103::/var/lib/postgresql:/bin/false\nweb:x:1000:1000::/home/web:/bin/sh\n"
	testGroup  = "root:x:0:\npostgres:x:103:\nweb:x:1000:\nsecrets:x:2000:web\n"
)

// secretsServer serves a Server whose guest root is a temp dir with the
// given services.d files, and returns its client, root and fake mounts.
func secretsServer(t *testing.T, services map[string]string) (*client.Client, string, *fakeMounts) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("secret files are chowned: needs root")
	}
	root := t.TempDir()
	for _, d := range []string{"etc/mvm/services.d", "run", "dev/shm"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, s string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, rel), []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", testPasswd, 0o644)
	write("etc/group", testGroup, 0o644)
	for name, body := range services {
		write("etc/mvm/services.d/"+name, body, 0o644)
	}
	s := New(Config{
		Log: discardLogger(), Stages: NewStages(proto.StageKernel), CopyRoot: root,
		PasswdFile: filepath.Join(root, "etc/passwd"), GroupFile: filepath.Join(root, "etc/group"),
	})
	s.sys = fakeGuestSys(nil)
	fm := &fakeMounts{}
	fm.install(&s.sys)
	return startPostRestore(t, s), root, fm
}

func callSecrets(t *testing.T, c *client.Client, secrets ...proto.Secret) (*proto.SecretsResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Secrets(ctx, proto.SecretsRequest{Secrets: secrets})
}

func sec(name, value string) proto.Secret { return proto.Secret{Name: name, Data: []byte(value)} }

type wantFile struct {
	name, value string
	uid, gid    uint32
	mode        os.FileMode
}

func checkFiles(t *testing.T, dir string, want []wantFile) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Errorf("%s holds %d entries, want %d", dir, len(ents), len(want))
	}
	for _, w := range want {
		p := filepath.Join(dir, w.name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", w.name, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != w.mode || st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", w.name, fi.Mode(), st.Uid, st.Gid, w.mode, w.uid, w.gid)
		}
		if b, _ := os.ReadFile(p); string(b) != w.value {
			t.Errorf("%s holds %q, want %q", w.name, b, w.value)
		}
	}
}

func checkDir(t *testing.T, dir string, mode os.FileMode, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != mode || st.Uid != 0 || st.Gid != gid {
		t.Errorf("%s: %v %d:%d, want dir %v 0:%d", dir, fi.Mode(), st.Uid, st.Gid, mode, gid)
	}
}

// TestSecretsTmpfs: the set lands in a tmpfs of the agent's own at
// /run/secrets, owned by the image's service user when there is one.
func TestSecretsTmpfs(t *testing.T) {
	const pgService = `{"name":"postgres","command":["/bin/postgres"],"user":"postgres"}`
	tests := []struct {
		name     string
		services map[string]string
		secrets  []proto.Secret
		files    []wantFile
		dirMode  os.FileMode
		dirGID   uint32
		note     string
	}{
		{
			name:    "no services: root",
			secrets: []proto.Secret{sec("db_password", "hunter2"), sec("api.token", "t0k3n")},
			files:   []wantFile{{"db_password", "hunter2", 0, 0, 0o400}, {"api.token", "t0k3n", 0, 0, 0o400}},
			dirMode: 0o700,
		},
		{
			name:     "root services: root",
			services: map[string]string{"10-httpd.json": `{"name":"httpd","command":["/bin/httpd"],"user":"root"}`},
			secrets:  []proto.Secret{sec("k", "v")},
			files:    []wantFile{{"k", "v", 0, 0, 0o400}},
			dirMode:  0o700,
		},
		{
			name:     "the image's user",
			services: map[string]string{"10-pg.json": pgService, "20-cron.json": `{"name":"cron","command":["/bin/crond"]}`},
			secrets:  []proto.Secret{sec("db_password", "hunter2")},
			files:    []wantFile{{"db_password", "hunter2", 102, 103, 0o400}},
			dirMode:  0o750, dirGID: 103,
		},
		{
			name: "services disagree: root, and says so",
			services: map[string]string{"10-pg.json": pgService,
				"20-web.json": `{"name":"web","command":["/bin/web"],"user":"web"}`},
			secrets: []proto.Secret{sec("db_password", "hunter2")},
			files:   []wantFile{{"db_password", "hunter2", 0, 0, 0o400}},
			dirMode: 0o700,
			note:    "postgres, web",
		},
		{
			name:     "explicit owners and modes",
			services: map[string]string{"10-pg.json": pgService},
			secrets: []proto.Secret{
				{Name: "a", Data: []byte("1"), User: "web"},
				{Name: "b", Data: []byte("2"), User: "root:secrets", Mode: 0o440},
			},
			files:   []wantFile{{"a", "1", 1000, 1000, 0o400}, {"b", "2", 0, 2000, 0o440}},
			dirMode: 0o711, // two groups need to get in: traverse only, no listing
		},
		{
			name:    "empty value",
			secrets: []proto.Secret{sec("empty", "")},
			files:   []wantFile{{"empty", "", 0, 0, 0o400}},
			dirMode: 0o700,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, root, fm := secretsServer(t, tt.services)
			res, err := callSecrets(t, c, tt.secrets...)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(root, proto.SecretsDir)
			if res.Storage != proto.SecretsTmpfs || res.Dir != proto.SecretsDir || len(res.Files) != len(tt.files) {
				t.Errorf("result %+v", res)
			}
			if !strings.Contains(res.Note, tt.note) || (tt.note == "") != (res.Note == "") {
				t.Errorf("note %q, want %q", res.Note, tt.note)
			}
			if !fm.mounted(dir) {
				t.Fatalf("no tmpfs at %s: %v", dir, fm.calls)
			}
			call := fm.calls[0]
			for _, want := range []string{"mount mvm-secrets " + dir + " tmpfs", "mode=0700,uid=0,gid=0", fmt.Sprintf("%#x", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)} {
				if !strings.Contains(call, want) {
					t.Errorf("mount call %q lacks %q", call, want)
				}
			}
			checkFiles(t, dir, tt.files)
			checkDir(t, dir, tt.dirMode, tt.dirGID)
		})
	}
}

// TestSecretsReplaceAndDrop: a second set replaces the first, whose files
// are zeroed (a process holding one open reads zeros) and removed; the
// empty set unmounts and leaves nothing.
func TestSecretsReplaceAndDrop(t *testing.T) {
	c, root, fm := secretsServer(t, nil)
	dir := filepath.Join(root, proto.SecretsDir)
	if _, err := callSecrets(t, c, sec("old", "first-value"), sec("keep", "x")); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join(dir, "old"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	fm.busy = 1 // the holder keeps the tmpfs busy: a lazy unmount follows
	res, err := callSecrets(t, c, sec("new", "second"), sec("keep", "y"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 2 {
		t.Errorf("removed %d, want 2", res.Removed)
	}
	if b, _ := os.ReadFile("/proc/self/fd/" + fmt.Sprint(held.Fd())); !bytes.Equal(b, make([]byte, len("first-value"))) {
		t.Errorf("old file still reads %q after replacement", b)
	}
	checkFiles(t, dir, []wantFile{{"new", "second", 0, 0, 0o400}, {"keep", "y", 0, 0, 0o400}})
	if !strings.Contains(strings.Join(fm.calls, "\n"), fmt.Sprintf("umount %s %#x", dir, unix.MNT_DETACH)) {
		t.Errorf("busy tmpfs not detached: %v", fm.calls)
	}
	res, err = callSecrets(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 2 || res.Storage != "" || len(res.Files) != 0 {
		t.Errorf("drop result %+v", res)
	}
	if fm.mounted(dir) {
		t.Errorf("still mounted after drop: %v", fm.calls)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left after drop: %v", dir, err)
	}
	// Dropping nothing is fine too.
	if _, err := callSecrets(t, c); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsContainerFallback: without CAP_SYS_ADMIN (mount: EPERM) the
// files go to a 0700 directory on the container's own /dev/shm tmpfs,
// linked from /run/secrets, and the reply says so. A /dev/shm that is no
// tmpfs, or a bind mount from the host, is refused: nothing is written.
func TestSecretsContainerFallback(t *testing.T) {
	tests := []struct {
		name string
		shm  *mountEntry // the /dev/shm line of the mount table; nil: none
		ok   bool
	}{
		{"own shm tmpfs", &mountEntry{root: "/", fstype: "tmpfs", source: "shm"}, true},
		{"no shm mount", nil, false},
		{"shm on a disk", &mountEntry{root: "/", fstype: "ext4", source: "/dev/vda"}, false},
		{"shm bound from the host", &mountEntry{root: "/home/u/.local/state/mvm/x", fstype: "tmpfs", source: "tmpfs"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, root, fm := secretsServer(t, nil)
			fm.err = unix.EPERM
			shm := filepath.Join(root, "dev/shm")
			if tt.shm != nil {
				e := *tt.shm
				e.point = shm
				fm.table = append(fm.table, e)
			}
			link := filepath.Join(root, proto.SecretsDir)
			res, err := callSecrets(t, c, sec("db_password", "hunter2"))
			if !tt.ok {
				if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeUnavailable || !strings.Contains(e.Message, "CAP_SYS_ADMIN") {
					t.Fatalf("err = %v, want unavailable naming CAP_SYS_ADMIN", err)
				}
				assertValueNowhere(t, root, "hunter2")
				if _, err := os.Lstat(link); !os.IsNotExist(err) {
					t.Errorf("%s left behind: %v", link, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Storage != proto.SecretsShm || !strings.Contains(res.Note, "CAP_SYS_ADMIN") || !strings.Contains(res.Note, "/dev/shm/"+shmPrefix) {
				t.Errorf("result %+v", res)
			}
			target, err := os.Readlink(link)
			if err != nil || filepath.Dir(target) != shm || !strings.HasPrefix(filepath.Base(target), shmPrefix) {
				t.Fatalf("%s -> %q, %v", link, target, err)
			}
			checkDir(t, target, 0o700, 0)
			checkFiles(t, link, []wantFile{{"db_password", "hunter2", 0, 0, 0o400}})
			// Replace, then drop: the shm directory and the link go too.
			if _, err := callSecrets(t, c, sec("b", "2")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(target); !os.IsNotExist(err) {
				t.Errorf("old fallback dir %s kept: %v", target, err)
			}
			if _, err := callSecrets(t, c); err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(shm); len(ents) != 0 {
				t.Errorf("/dev/shm keeps %v", ents)
			}
			if _, err := os.Lstat(link); !os.IsNotExist(err) {
				t.Errorf("%s kept after drop: %v", link, err)
			}
		})
	}
}

// TestSecretsRefusals: bad requests and hostile guest state change nothing
// and write no value anywhere it should not be.
func TestSecretsRefusals(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, root string, fm *fakeMounts)
		secrets []proto.Secret
		code    string
		msg     string
	}{
		{name: "dot dot", secrets: []proto.Secret{sec("..", "hunter2")}, code: proto.CodeBadRequest, msg: "secret name"},
		{name: "slash", secrets: []proto.Secret{sec("a/b", "hunter2")}, code: proto.CodeBadRequest, msg: "secret name"},
		{name: "unknown owner", secrets: []proto.Secret{{Name: "a", Data: []byte("hunter2"), User: "nobody-here"}}, code: proto.CodeBadRequest, msg: "not found"},
		{
			name: "image user unknown",
			setup: func(t *testing.T, root string, _ *fakeMounts) {
				writeFile(t, filepath.Join(root, "etc/mvm/services.d/x.json"), `{"name":"x","command":["/x"],"user":"ghost"}`)
			},
			secrets: []proto.Secret{sec("a", "hunter2")}, code: proto.CodeBadRequest, msg: "ghost",
		},
		{
			name: "image files in /run/secrets",
			setup: func(t *testing.T, root string, _ *fakeMounts) {
				writeFile(t, filepath.Join(root, "run/secrets/README"), "image content")
			},
			secrets: []proto.Secret{sec("a", "hunter2")}, code: proto.CodeBusy, msg: "not empty",
		},
		{
			name: "a file at /run/secrets",
			setup: func(t *testing.T, root string, _ *fakeMounts) {
				writeFile(t, filepath.Join(root, "run/secrets"), "x")
			},
			secrets: []proto.Secret{sec("a", "hunter2")}, code: proto.CodeBusy, msg: "not a directory",
		},
		{
			name: "mount table disagrees",
			setup: func(_ *testing.T, _ string, fm *fakeMounts) {
				fm.badShow = func([]mountEntry) []mountEntry { return nil }
			},
			secrets: []proto.Secret{sec("a", "hunter2")}, code: proto.CodeInternal, msg: "mount table",
		},
		{
			name:    "mount fails otherwise",
			setup:   func(_ *testing.T, _ string, fm *fakeMounts) { fm.err = unix.ENODEV },
			secrets: []proto.Secret{sec("a", "hunter2")}, code: proto.CodeInternal, msg: "no such device",
		},
		{
			// A guest process wins a race and plants a link where a secret
			// goes: O_EXCL|O_NOFOLLOW refuse it, the target is untouched and
			// the whole set is rolled back.
			name: "planted link in the tmpfs",
			setup: func(t *testing.T, root string, fm *fakeMounts) {
				writeFile(t, filepath.Join(root, "victim"), "original")
				fm.hook = func(target string) {
					if err := os.Symlink(filepath.Join(root, "victim"), filepath.Join(target, "b")); err != nil {
						t.Error(err)
					}
				}
			},
			secrets: []proto.Secret{sec("a", "hunter2"), sec("b", "hunter2")}, code: proto.CodeInternal, msg: "file exists",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, root, fm := secretsServer(t, nil)
			if tt.setup != nil {
				tt.setup(t, root, fm)
			}
			_, err := callSecrets(t, c, tt.secrets...)
			e, ok := proto.AsError(err)
			if !ok || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("err = %v, want %s %q", err, tt.code, tt.msg)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error quotes the value: %v", err)
			}
			assertValueNowhere(t, root, "hunter2")
			if fm.mounted(filepath.Join(root, proto.SecretsDir)) {
				t.Errorf("left mounted: %v", fm.calls)
			}
			if b, err := os.ReadFile(filepath.Join(root, "victim")); err == nil && string(b) != "original" {
				t.Errorf("wrote through the link: victim = %q", b)
			}
		})
	}
}

// TestSecretsPlantedLinkAtDir: a symlink at /run/secrets (pointing at a
// directory the attacker wants written) is replaced by the mount point.
func TestSecretsPlantedLinkAtDir(t *testing.T) {
	c, root, _ := secretsServer(t, nil)
	victim := filepath.Join(root, "victim-dir")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, proto.SecretsDir)
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if _, err := callSecrets(t, c, sec("a", "v")); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("wrote into the link's target: %v", ents)
	}
	checkDir(t, link, 0o700, 0)
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertValueNowhere fails if any file under root holds value.
func assertValueNowhere(t *testing.T, root, value string) {
	t.Helper()
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the value", p)
		}
		return nil
	})
}

func TestParseMountInfo(t *testing.T) {
	in := "22 1 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755\n" +
		"90 76 0:47 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k\n" +
		"91 74 254:0 /var/lib/docker/x/hosts /etc/hosts rw - ext4 /dev/vda rw\n" +
		"95 22 0:50 / /run/with\\040space rw - tmpfs mvm-secrets rw\n" +
		"garbage\n" +
		"1 2 3 4 5 6 7 - \n" +
		"96 22 0:51 / /run/secrets rw master:1 propagate_from:2 - tmpfs mvm-secrets rw,mode=700\n"
	got := parseMountInfo([]byte(in))
	want := []mountEntry{
		{"/", "/run", "tmpfs", "tmpfs"},
		{"/", "/dev/shm", "tmpfs", "shm"},
		{"/var/lib/docker/x/hosts", "/etc/hosts", "ext4", "/dev/vda"},
		{"/", "/run/with space", "tmpfs", "mvm-secrets"},
		{"/", "/run/secrets", "tmpfs", "mvm-secrets"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if m, ok := topMount(got, "/run/secrets"); !ok || !m.ours() {
		t.Errorf("topMount = %v %v", m, ok)
	}
	for _, tt := range []struct{ in, want string }{
		{`a\040b`, "a b"}, {`\134`, `\`}, {`tail\04`, `tail\04`}, {`\999`, `\999`}, {`plain`, "plain"},
	} {
		if got := unescapeMount(tt.in); got != tt.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParseMountInfo: the mount table names guest-controlled paths; no
// line may panic the parser, and every entry has its fields.
func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte("96 22 0:51 / /run/secrets rw master:1 - tmpfs mvm-secrets rw,mode=700\n"))
	f.Add([]byte("1 2 3 4 5 6 - a\n- - - - - - - - -\n"))
	f.Add([]byte(`1 1 0:1 /\0 /\04 rw - t \1234` + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, e := range parseMountInfo(in) {
			if e.fstype == "" || e.point == "" || e.root == "" {
				t.Fatalf("entry %+v", e)
			}
		}
	})
}

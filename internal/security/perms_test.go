package security

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
)

func TestInspect(t *testing.T) {
	tests := []struct {
		name   string
		dir    bool
		mode   os.FileMode
		level  level
		link   bool // a symlink to a good file
		other  bool // owned by someone else (as far as the check knows)
		exists bool
		status Status // "": no finding
		want   string
	}{
		{name: "private dir 0700", dir: true, mode: 0o700, level: private, exists: true},
		{name: "private dir 0750", dir: true, mode: 0o750, level: private, exists: true, status: Warn, want: "open to group or others"},
		{name: "private dir group-writable", dir: true, mode: 0o770, level: private, exists: true, status: Fail, want: "writable by group or others"},
		{name: "shared dir 0755", dir: true, mode: 0o755, level: shared, exists: true},
		{name: "shared dir world-writable", dir: true, mode: 0o777, level: shared, exists: true, status: Fail, want: "writable"},
		{name: "record 0600", mode: 0o600, level: private, exists: true},
		{name: "record 0644", mode: 0o644, level: private, exists: true, status: Warn, want: "mvmctl makes it 0600"},
		{name: "record 0660", mode: 0o660, level: private, exists: true, status: Fail, want: "writable"},
		{name: "secret 0600", mode: 0o600, level: secret, exists: true},
		{name: "secret 0640", mode: 0o640, level: secret, exists: true, status: Fail, want: "holds a private key"},
		{name: "symlink", mode: 0o600, level: private, link: true, exists: true, status: Fail, want: "symbolic link"},
		{name: "someone else's", mode: 0o600, level: private, other: true, exists: true, status: Fail, want: "not by you"},
		{name: "missing", level: private},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			p := filepath.Join(base, "x")
			switch {
			case !tt.exists:
			case tt.dir:
				mkdir(t, p, tt.mode)
			case tt.link:
				write(t, p+".target", "{}", tt.mode)
				if err := os.Symlink(p+".target", p); err != nil {
					t.Fatal(err)
				}
			default:
				write(t, p, "{}", tt.mode)
			}
			euid := os.Geteuid()
			if tt.other {
				euid++
			}
			exists, c := inspect(pathRule{path: p, what: "thing", level: tt.level, dir: tt.dir}, euid, "permissions")
			if exists != tt.exists {
				t.Errorf("exists %v, want %v", exists, tt.exists)
			}
			switch {
			case tt.status == "" && c != nil:
				t.Errorf("unexpected finding %+v", c)
			case tt.status != "" && c == nil:
				t.Errorf("no finding, want %s", tt.status)
			case c != nil:
				if c.Status != tt.status || !strings.Contains(c.Detail, tt.want) || !strings.Contains(c.Detail, p) || c.Fix == "" {
					t.Errorf("got %+v, want %s %q", c, tt.status, tt.want)
				}
			}
		})
	}
}

func TestInspectKindMismatch(t *testing.T) {
	base := t.TempDir()
	f := filepath.Join(base, "f")
	write(t, f, "", 0o600)
	if _, c := inspect(pathRule{path: f, what: "d", dir: true, level: private}, os.Geteuid(), "p"); c == nil || c.Status != Fail || !strings.Contains(c.Detail, "not a directory") {
		t.Errorf("file for a directory: %+v", c)
	}
	if _, c := inspect(pathRule{path: base, what: "f", level: private}, os.Geteuid(), "p"); c == nil || c.Status != Fail || !strings.Contains(c.Detail, "not a regular file") {
		t.Errorf("directory for a file: %+v", c)
	}
}

func TestCheckPermissions(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, e *Env, vmDir string)
		status []Status
		want   string
	}{
		{"all private", func(*testing.T, *Env, string) {}, []Status{Pass}, "checked: none writable by group or others"},
		{"the cache may be read by others", func(t *testing.T, e *Env, _ string) { mkdir(t, e.Dirs.Cache, 0o755) }, []Status{Pass}, ""},
		{"VM directory writable by group", func(t *testing.T, _ *Env, d string) { mkdir(t, d, 0o770) }, []Status{Fail}, "VM directory"},
		{"VM record readable by others", func(t *testing.T, _ *Env, d string) { write(t, filepath.Join(d, "vm.json"), "{}", 0o644) }, []Status{Warn}, "VM record"},
		{"backend record writable by others", func(t *testing.T, _ *Env, d string) { write(t, filepath.Join(d, "backend.json"), "{}", 0o666) }, []Status{Fail}, "backend record"},
		{"config drive readable by others", func(t *testing.T, _ *Env, d string) { write(t, filepath.Join(d, "config.img"), "", 0o644) }, []Status{Fail}, "private key"},
		{"state directory open, share writable", func(t *testing.T, e *Env, _ string) {
			mkdir(t, e.Dirs.State, 0o755)
			mkdir(t, e.Dirs.Share, 0o777)
		}, []Status{Warn, Fail}, "directory"},
		{"network record readable by others", func(t *testing.T, e *Env, _ string) {
			write(t, filepath.Join(e.Dirs.Share, "networks", "lab.json"), "{}", 0o644)
		}, []Status{Warn}, "network record"},
		{"audit file writable by group", func(t *testing.T, e *Env, _ string) {
			mkdir(t, filepath.Join(e.Dirs.State, "audit"), 0o700)
			write(t, filepath.Join(e.Dirs.State, "audit", "audit.log"), "", 0o620)
		}, []Status{Fail}, "audit file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			mkdir(t, filepath.Join(e.Dirs.Share, "networks"), 0o700)
			write(t, filepath.Join(e.Dirs.Share, "networks", "lab.json"), "{}", 0o600)
			e.Networks = []*network.Network{{Name: "lab", Mode: network.ModeBridge}}
			rec := addVM(t, e, store.Record{Name: "web", State: "running", Backend: "qemu"})
			write(t, filepath.Join(rec.Dir, "backend.json"), "{}", 0o600)
			write(t, filepath.Join(rec.Dir, "config.img"), "", 0o600)
			tt.break_(t, e, rec.Dir)
			got := checkPermissions(e)
			if s := statuses(got); !slices.Equal(s, tt.status) {
				t.Fatalf("statuses %v, want %v: %+v", s, tt.status, got)
			}
			for _, c := range got {
				if !strings.Contains(c.Detail, tt.want) {
					t.Errorf("%q does not say %q", c.Detail, tt.want)
				}
			}
		})
	}
}

func TestCheckPermissionsNothingYet(t *testing.T) {
	base := t.TempDir()
	e := &Env{Euid: os.Geteuid()}
	e.Dirs.State, e.Dirs.Share, e.Dirs.Cache = filepath.Join(base, "s"), filepath.Join(base, "h"), filepath.Join(base, "c")
	wantOne(t, checkPermissions(e), Info, "nothing to check yet")
	for _, p := range []string{e.Dirs.State, e.Dirs.Share, e.Dirs.Cache} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the check created %s", p)
		}
	}
}

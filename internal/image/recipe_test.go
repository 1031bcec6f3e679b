package image

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const fullRecipe = `# every key
name = "web"
description = "A web server"
tags = ["web", "http"]

[kernel]
source = "debian"

[rootfs]
source = "debian"
suite = "bookworm"
packages = ["nginx-light", "curl"]
free_mib = 100

[[files]]
path = "/srv/www/index.html"
content = "hi"
mode = "0640"

[[files]]
path = "/etc/app.conf"
src = "app.conf"

[env]
LANG = "C.UTF-8"

[[services]]
name = "nginx"
command = ["/usr/sbin/nginx", "-g", "daemon off;"]
user = "www-data"

[[health]]
name = "http"
command = ["curl", "-fs", "http://127.0.0.1/"]
interval = "5s"
timeout = "2s"

[access]
console = true

[resources]
cpus = 2
memory_mib = 512
`

func TestParseRecipeFull(t *testing.T) {
	r, err := ParseRecipe("web.toml", []byte(fullRecipe), "/recipes")
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "web" || r.Rootfs.Suite != "bookworm" || len(r.Rootfs.Packages) != 2 || r.Rootfs.FreeMiB != 100 {
		t.Errorf("recipe %+v", r)
	}
	if f := r.Files[0]; f.Mode.Perm != 0o640 || f.Content != "hi" {
		t.Errorf("files[0] %+v", f)
	}
	if f := r.Files[1]; f.Mode.Perm != 0o644 || r.srcPath(f.Src) != "/recipes/app.conf" {
		t.Errorf("files[1] %+v (default mode 0644, src relative to the recipe)", f)
	}
	if h := r.Health[0]; time.Duration(h.Interval) != 5*time.Second || time.Duration(h.Timeout) != 2*time.Second {
		t.Errorf("health %+v", h)
	}
	if s := r.Services[0]; s.User != "www-data" || len(s.Command) != 3 {
		t.Errorf("service %+v", s)
	}
	if !r.Access.Console || r.Resources.CPUs != 2 || r.Resources.MemoryMiB != 512 || r.Env["LANG"] != "C.UTF-8" {
		t.Errorf("recipe %+v", r)
	}
}

func TestModeForms(t *testing.T) {
	for _, v := range []string{`"0644"`, `"644"`, `644`, `0o644`} {
		r, err := ParseRecipe("r", []byte("name = \"x\"\n[[files]]\npath = \"/a\"\nmode = "+v+"\n"), "")
		if err != nil || r.Files[0].Mode.Perm != 0o644 {
			t.Errorf("mode = %s: %+v, %v", v, r, err)
		}
	}
}

func TestParseRecipeDefaults(t *testing.T) {
	r, err := ParseRecipe("m.toml", []byte("name = \"m\"\n[[services]]\nname = \"s\"\ncommand = [\"/bin/true\"]\n[[health]]\nname = \"h\"\ncommand = [\"/bin/true\"]\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Kernel.Source != KernelDebian || r.Rootfs.Source != RootfsMinimal || r.Rootfs.FreeMiB != 256 ||
		r.Services[0].User != "root" || time.Duration(r.Health[0].Interval) != 10*time.Second ||
		time.Duration(r.Health[0].Timeout) != 5*time.Second || r.Access.Console {
		t.Errorf("defaults not applied: %+v", r)
	}
	d, err := ParseRecipe("d.toml", []byte("name = \"d\"\n[rootfs]\nsource = \"debian\"\n"), "")
	if err != nil || d.Rootfs.Suite != DefaultSuite {
		t.Errorf("debian suite default: %+v, %v", d, err)
	}
}

func TestParseRecipeErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // substrings of the error
	}{
		{"unknown top key", "name = \"x\"\nsize = 3\n", []string{"r.toml:2:", `unknown key "size"`}},
		{"unknown nested key", "name = \"x\"\n\n[rootfs]\nsource = \"minimal\"\nsuites = \"a\"\n", []string{"r.toml:5:", `"rootfs.suites"`}},
		{"unknown key in array table", "name = \"x\"\n[[files]]\npath = \"/a\"\nowner = \"me\"\n", []string{"r.toml:4:", `"files.owner"`}},
		{"wrong type", "name = \"x\"\n[resources]\ncpus = \"two\"\n", []string{"r.toml:3:", "resources.cpus"}},
		{"hex mode", "name = \"x\"\n[[files]]\npath = \"/a\"\nmode = 0x1ff\n", []string{"r.toml", "0x1ff"}},
		{"bad octal mode", "name = \"x\"\n[[files]]\npath = \"/a\"\nmode = \"0999\"\n", []string{"r.toml:4:", "octal"}},
		{"bad duration", "name = \"x\"\n[[health]]\nname = \"h\"\ncommand = [\"x\"]\ninterval = \"soon\"\n", []string{"r.toml:5:", "soon"}},
		{"syntax", "name = \"x\nfoo", []string{"r.toml:1:"}},
		{"missing name", "description = \"d\"\n", []string{`name ""`}},
		{"bad name", "name = \"Web_1\"\n", []string{`name "Web_1"`}},
		{"kernel source", "name = \"x\"\n[kernel]\nsource = \"xen\"\n", []string{`kernel.source "xen"`}},
		{"kernel file no path", "name = \"x\"\n[kernel]\nsource = \"file\"\n", []string{"needs kernel.path"}},
		{"kernel path with debian", "name = \"x\"\n[kernel]\npath = \"/k\"\n", []string{"kernel.path is only used"}},
		{"rootfs source", "name = \"x\"\n[rootfs]\nsource = \"alpine\"\n", []string{`rootfs.source "alpine"`}},
		{"packages on minimal", "name = \"x\"\n[rootfs]\npackages = [\"curl\"]\n", []string{"do not apply"}},
		{"bad package", "name = \"x\"\n[rootfs]\nsource = \"debian\"\npackages = [\"curl; rm -rf /\"]\n", []string{"not a Debian package name"}},
		{"duplicate package", "name = \"x\"\n[rootfs]\nsource = \"debian\"\npackages = [\"a1\", \"a1\"]\n", []string{"listed twice"}},
		{"oci without image", "name = \"x\"\n[rootfs]\nsource = \"oci\"\n", []string{"needs rootfs.image"}},
		{"relative file path", "name = \"x\"\n[[files]]\npath = \"etc/a\"\n", []string{"clean absolute path"}},
		{"dotdot file path", "name = \"x\"\n[[files]]\npath = \"/etc/../a\"\n", []string{"clean absolute path"}},
		{"reserved path", "name = \"x\"\n[[files]]\npath = \"/etc/mvm/image.json\"\n", []string{"written by mvm"}},
		{"content and src", "name = \"x\"\n[[files]]\npath = \"/a\"\ncontent = \"a\"\nsrc = \"b\"\n", []string{"not both"}},
		{"src without recipe dir", "name = \"x\"\n[[files]]\npath = \"/a\"\nsrc = \"b\"\n", []string{"need a recipe file"}},
		{"duplicate file", "name = \"x\"\n[[files]]\npath = \"/a\"\n[[files]]\npath = \"/a\"\n", []string{"listed twice"}},
		{"bad env", "name = \"x\"\n[env]\n\"1X\" = \"a\"\n", []string{`"1X"`}},
		{"empty service command", "name = \"x\"\n[[services]]\nname = \"s\"\ncommand = []\n", []string{"non-empty argv"}},
		{"duplicate service", "name = \"x\"\n[[services]]\nname = \"s\"\ncommand = [\"a\"]\n[[services]]\nname = \"s\"\ncommand = [\"a\"]\n", []string{"used twice"}},
		{"bad user", "name = \"x\"\n[[services]]\nname = \"s\"\ncommand = [\"a\"]\nuser = \"Root Admin\"\n", []string{"user"}},
		{"timeout over interval", "name = \"x\"\n[[health]]\nname = \"h\"\ncommand = [\"a\"]\ninterval = \"2s\"\ntimeout = \"3s\"\n", []string{"at most the interval"}},
		{"cpus", "name = \"x\"\n[resources]\ncpus = 999\n", []string{"resources.cpus 999"}},
		{"memory", "name = \"x\"\n[resources]\nmemory_mib = 16\n", []string{"memory_mib 16"}},
		{"several problems", "name = \"x\"\n[resources]\ncpus = -1\nmemory_mib = 1\n", []string{"cpus -1", "memory_mib 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRecipe("r.toml", []byte(tt.src), "")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadRecipe(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "web.toml")
	if err := os.WriteFile(p, []byte(fullRecipe), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRecipe(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Origin() != p || r.srcPath("app.conf") != filepath.Join(dir, "app.conf") {
		t.Errorf("origin %q, src %q", r.Origin(), r.srcPath("app.conf"))
	}
	if _, err := LoadRecipe(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("missing file loaded")
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#\n"), maxRecipeSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRecipe(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized recipe: %v", err)
	}
}

func TestCanonicalIgnoresFormatting(t *testing.T) {
	a, err := ParseRecipe("a", []byte(fullRecipe), "/x")
	if err != nil {
		t.Fatal(err)
	}
	reformatted := strings.ReplaceAll(fullRecipe, "# every key\n", "") + "\n# trailing comment\n"
	b, err := ParseRecipe("b", []byte(reformatted), "/elsewhere") // src paths move too
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.canonical(), b.canonical()) {
		t.Errorf("canonical forms differ:\n%s\n%s", a.canonical(), b.canonical())
	}
	c, _ := ParseRecipe("c", []byte(strings.Replace(fullRecipe, "cpus = 2", "cpus = 3", 1)), "/x")
	if bytes.Equal(a.canonical(), c.canonical()) {
		t.Error("changing cpus kept the canonical form")
	}
}

func FuzzLoadRecipe(f *testing.F) {
	f.Add([]byte(fullRecipe))
	f.Add([]byte("name = \"m\"\n"))
	f.Add([]byte("name = \"x\"\n[[files]]\npath = \"/a\"\nmode = \"0755\"\n"))
	f.Add([]byte("[rootfs]\nsource = \"debian\"\npackages = [\"a\",]\n"))
	for _, r := range Catalog() {
		b, err := catalogFS.ReadFile("recipes/" + r.Name + ".toml")
		if err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "r.toml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := LoadRecipe(p)
		if err != nil {
			if !strings.Contains(err.Error(), "r.toml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever parses validates, re-validates and has a canonical form.
		if err := r.Validate(); err != nil {
			t.Errorf("accepted recipe fails Validate: %v", err)
		}
		_ = r.canonical()
		for _, f := range r.Files {
			if checkImagePath(f.Path) != nil {
				t.Errorf("accepted bad path %q", f.Path)
			}
		}
	})
}

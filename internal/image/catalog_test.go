package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestCatalogParses(t *testing.T) {
	c, err := loadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"minimal", "http", "worker", "python", "postgres"} {
		r, ok := c[want]
		if !ok {
			t.Errorf("catalog lacks %s", want)
			continue
		}
		if r.Description == "" || len(r.Tags) == 0 {
			t.Errorf("%s: needs a description and tags", want)
		}
	}
	if r, _ := Lookup("http"); len(r.Services) != 1 || len(r.Health) != 1 || r.Rootfs.Source != RootfsMinimal {
		t.Errorf("http recipe %+v", r)
	}
	if r, _ := Lookup("python"); r.Rootfs.Source != RootfsDebian || r.Rootfs.Packages[0] != "python3" {
		t.Errorf("python recipe %+v", r)
	}
}

func TestParseCatalogNameMismatch(t *testing.T) {
	fsys := fstest.MapFS{"recipes/a.toml": {Data: []byte("name = \"b\"\n")}}
	if _, err := parseCatalog(fsys); err == nil || !strings.Contains(err.Error(), `want "a"`) {
		t.Errorf("err = %v", err)
	}
}

func TestSearch(t *testing.T) {
	names := func(rs []*Recipe) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return strings.Join(out, ",")
	}
	tests := []struct{ term, want string }{
		{"python", "python"},
		{"DEBIAN", "postgres,python,worker"}, // tag, case-insensitive
		{"sql", "postgres"},                  // tag substring
		{"web", "http"},                      // tag
		{"port 80", "http"},                  // description
		{"http", "http"},                     // name first, no duplicates
		{"nothing-matches", ""},
	}
	for _, tt := range tests {
		if got := names(Search(tt.term)); got != tt.want {
			t.Errorf("Search(%q) = %q, want %q", tt.term, got, tt.want)
		}
	}
}

func TestMirrorLines(t *testing.T) {
	one := parseSourcesList([]byte("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n" +
		"deb-src http://mirror.example/debian bookworm main\ndeb http://security.example/debian-security bookworm-security main\n"))
	deb822 := parseDeb822Sources([]byte("Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
		"Types: deb\nURIs: https://other.example/\nSuites: nodistro\nComponents: main\n\n" +
		"Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"))
	tests := []struct {
		name  string
		srcs  []aptSource
		suite string
		want  []string
	}{
		{"one-line", one, "bookworm", []string{"deb http://mirror.example/debian bookworm main", "deb http://security.example/debian-security bookworm-security main"}},
		{"deb822", deb822, "bookworm", []string{"deb http://deb.example/debian bookworm main", "deb http://deb.example/debian bookworm-updates main"}},
		{"other suite uses host mirror", deb822, "trixie", []string{"deb http://deb.example/debian trixie main"}},
		{"no sources", nil, "bookworm", []string{"deb " + fallbackMirror + " bookworm main"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mirrorLines(tt.srcs, tt.suite)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func FuzzParseAptSources(f *testing.F) {
	f.Add([]byte("deb [trusted=yes] http://a/ b main\n"))
	f.Add([]byte("Types: deb\nURIs: http://a/\nSuites: b\n c\nComponents: main\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range append(parseSourcesList(b), parseDeb822Sources(b)...) {
			_ = mirrorLines([]aptSource{s}, "bookworm")
		}
	})
}

// tarball builds a tar from (name, type, body/linkname) triples.
func tarball(t *testing.T, entries ...[3]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Typeflag: e[1][0], Mode: 0o644, Uid: 0, Gid: 0}
		switch h.Typeflag {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeReg:
			h.Size = int64(len(e[2]))
		default:
			h.Linkname = e[2]
		}
		if e[0] == "./etc/shadow" {
			h.Gid = 42
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e[2]))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "base.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStageTarballConfined(t *testing.T) {
	outside := t.TempDir()
	p := tarball(t,
		[3]string{"./", "5", ""},
		[3]string{"./usr/", "5", ""},
		[3]string{"./usr/sbin/", "5", ""},
		[3]string{"./sbin", "2", "usr/sbin"},
		[3]string{"./etc/", "5", ""},
		[3]string{"./etc/shadow", "0", "root:*:1::::::\n"},
		[3]string{"./etc/shadow-link", "1", "./etc/shadow"},
		[3]string{"./escape", "2", "../../../.."}, // relative link climbing out
		[3]string{"./escape/pwned", "0", "bad"},   // written through it: lands in root
		[3]string{"./c", "3", ""},                 // char device: skipped
	)
	root := filepath.Join(t.TempDir(), "root")
	os.Mkdir(root, 0o755)
	s, err := stageTarball(context.Background(), root, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("tar entry written outside the staging root")
	}
	if b, err := os.ReadFile(filepath.Join(root, "pwned")); err != nil || string(b) != "bad" {
		t.Errorf("link target not resolved inside root: %q %v", b, err)
	}
	if o := s.owners["/etc/shadow"]; o.gid != 42 {
		t.Errorf("owner of /etc/shadow = %+v", o)
	}
	// Recipe content goes through /sbin -> usr/sbin.
	if err := addAgent(s, p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/mvm-agent")); err != nil {
		t.Errorf("agent not written through the /sbin link: %v", err)
	}
	abs := tarball(t, [3]string{"./escape", "2", outside}, [3]string{"./escape/pwned", "0", "bad"})
	if _, err := stageTarball(context.Background(), t.TempDir(), abs); err == nil {
		t.Error("wrote through an absolute link to a missing in-root dir")
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("tar entry written outside the staging root via an absolute link")
	}
	bad := tarball(t, [3]string{"../x", "0", "x"})
	if _, err := stageTarball(context.Background(), t.TempDir(), bad); err == nil {
		t.Error("accepted a .. entry")
	}
}

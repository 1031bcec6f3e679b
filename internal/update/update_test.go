package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/sign"
)

// fakeRelease serves a release tree from files, the way a static web
// server holding `make release` output would.
type fakeRelease struct {
	files map[string][]byte // path under the root → content
}

func (f *fakeRelease) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, ok := f.files[strings.TrimPrefix(r.URL.Path, "/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(b)
}

// publish adds version v with one binary per name (content "NAME v"),
// SHA256SUMS and its signature by key.
func (f *fakeRelease) publish(t *testing.T, key *sign.PrivateKey, v string, names ...string) {
	t.Helper()
	var sums strings.Builder
	for _, n := range names {
		b := []byte(n + " " + v + "\n")
		f.files[v+"/"+n] = b
		d := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	sig, err := sign.SignRelease(key, []byte(sums.String()))
	if err != nil {
		t.Fatal(err)
	}
	f.files[v+"/SHA256SUMS"] = []byte(sums.String())
	f.files[v+"/SHA256SUMS.sig"] = sig
	f.files["LATEST"] = []byte(v + "\n")
}

func install(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n+" installed\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func content(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUpdateAndRollback(t *testing.T) {
	key, err := sign.GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := sign.GenerateKey("other")
	rel := &fakeRelease{files: map[string][]byte{}}
	rel.publish(t, key, "v1.2.0", "mvmctl-linux-amd64", "mvmctl-darwin-arm64", "mvm-agent-linux-amd64", "mvm-supervisor-linux-amd64")
	srv := httptest.NewServer(rel)
	defer srv.Close()

	dir := t.TempDir()
	install(t, dir, "mvmctl", "mvm-agent", "mvm-supervisor")
	o := Options{URL: srv.URL, Trusted: sign.NewKeySet(key.Public()), Dir: dir, GOOS: "linux", GOARCH: "amd64"}
	ctx := context.Background()

	r, err := Check(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "v1.2.0" || r.Files["mvmctl"] != "mvmctl-linux-amd64" || r.Files["mvm-agent"] != "mvm-agent-linux-amd64" || r.Signer != key.Public().ID {
		t.Fatalf("check: %+v", r)
	}
	if err := Apply(ctx, o, r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "containerd-shim-mvm-v1")); err == nil {
		t.Error("update installed the containerd shim, which was not installed before")
	}
	for _, b := range installedHere {
		if got := content(t, filepath.Join(dir, b)); got != b+"-linux-amd64 v1.2.0\n" {
			t.Errorf("%s after update: %q", b, got)
		}
		if got := content(t, filepath.Join(dir, b+PrevSuffix)); got != b+" installed\n" {
			t.Errorf("%s kept: %q", b, got)
		}
		if fi, _ := os.Stat(filepath.Join(dir, b)); fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v", b, fi.Mode())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*new*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}

	done, err := Rollback(dir)
	if err != nil || len(done) != 3 {
		t.Fatalf("rollback: %v %v", done, err)
	}
	for _, b := range installedHere {
		if got := content(t, filepath.Join(dir, b)); got != b+" installed\n" {
			t.Errorf("%s after rollback: %q", b, got)
		}
	}
	if _, err := Rollback(dir); err == nil {
		t.Error("a second rollback found something to roll back")
	}

	// Refusals: each leaves the installation exactly as it was.
	for _, tc := range []struct {
		name   string
		tamper func(f map[string][]byte)
		o      func(o *Options)
		want   string
	}{
		{name: "tampered binary", tamper: func(f map[string][]byte) { f["v1.2.0/mvm-agent-linux-amd64"] = []byte("evil") }, want: "tampered"},
		{name: "tampered checksums", tamper: func(f map[string][]byte) {
			f["v1.2.0/SHA256SUMS"] = append([]byte(strings.Repeat("0", 64)+"  extra\n"), f["v1.2.0/SHA256SUMS"]...)
		}, want: "altered"},
		{name: "no signature", tamper: func(f map[string][]byte) { delete(f, "v1.2.0/SHA256SUMS.sig") }, want: "404"},
		{name: "signed by another key", o: func(o *Options) { o.Trusted = sign.NewKeySet(other.Public()) }, want: "not the trusted release key"},
		{name: "no pinned key", o: func(o *Options) { o.Trusted = nil }, want: "no release key"},
		{name: "plain http elsewhere", o: func(o *Options) { o.URL = "http://releases.example.com/mvm" }, want: "https is required"},
		{name: "bad index", tamper: func(f map[string][]byte) { f["LATEST"] = []byte("../../etc\n") }, want: "release index"},
		{name: "platform missing", o: func(o *Options) { o.GOARCH = "riscv64" }, want: "no mvmctl-linux-riscv64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := map[string][]byte{}
			for k, v := range rel.files {
				saved[k] = v
			}
			defer func() { rel.files = saved }()
			if tc.tamper != nil {
				cp := map[string][]byte{}
				for k, v := range saved {
					cp[k] = v
				}
				tc.tamper(cp)
				rel.files = cp
			}
			oo := o
			if tc.o != nil {
				tc.o(&oo)
			}
			r, err := Check(ctx, oo)
			if err == nil {
				err = Apply(ctx, oo, r)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			for _, b := range installedHere {
				if got := content(t, filepath.Join(dir, b)); got != b+" installed\n" {
					t.Errorf("%s changed by a refused update: %q", b, got)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".*new*")); len(left) != 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}

// Only the binaries installed are updated: mvmctl alone on a Mac.
func TestUpdateOnlyWhatIsInstalled(t *testing.T) {
	key, _ := sign.GenerateKey("release")
	rel := &fakeRelease{files: map[string][]byte{}}
	rel.publish(t, key, "v2.0.0", "mvmctl-darwin-arm64", "mvm-agent-linux-arm64", "mvm-supervisor-linux-arm64")
	srv := httptest.NewServer(rel)
	defer srv.Close()
	dir := t.TempDir()
	install(t, dir, "mvmctl")
	o := Options{URL: srv.URL + "/", Trusted: sign.NewKeySet(key.Public()), Dir: dir, GOOS: "darwin", GOARCH: "arm64"}
	o.URL = strings.TrimSuffix(o.URL, "/")
	r, err := Check(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Files) != 1 || r.Files["mvmctl"] != "mvmctl-darwin-arm64" {
		t.Fatalf("files %v", r.Files)
	}
	if err := Apply(context.Background(), o, r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mvm-agent")); err == nil {
		t.Error("update installed a binary that was not there")
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
		ok   bool
	}{
		{"v1.2.3", "v1.2.3", 0, true},
		{"v1.2.3", "v1.10.0", -1, true},
		{"v2.0.0", "v1.99.99", 1, true},
		{"v1.0.0-rc.1", "v1.0.0", -1, true},
		{"v1.0.0", "v1.0.0-rc.1", 1, true},
		{"v1.0.0-rc.1", "v1.0.0-rc.2", -1, true},
		{"f2a026a-dirty", "v1.0.0", 0, false},
	} {
		got, ok := Compare(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Compare(%s, %s) = %d %v, want %d %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseSums(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		want string // "" for an error
	}{
		{h + "  mvmctl-linux-amd64\n", "mvmctl-linux-amd64"},
		{h + " *mvmctl-linux-amd64\n", "mvmctl-linux-amd64"},
		{h + "  ../etc/passwd\n", ""},
		{h + "  a/b\n", ""},
		{strings.ToUpper(h) + "  x\n", ""},
		{h[:63] + "  x\n", ""},
		{h + "  x\n" + h + "  x\n", ""},
		{"", ""},
	} {
		m, err := ParseSums([]byte(tc.in))
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseSums(%q) accepted: %v", tc.in, m)
			}
			continue
		}
		if err != nil || m[tc.want] != h {
			t.Errorf("ParseSums(%q) = %v, %v", tc.in, m, err)
		}
	}
}

func FuzzParseSums(f *testing.F) {
	f.Add([]byte(strings.Repeat("ab", 32) + "  mvmctl-linux-amd64\n"))
	f.Add([]byte("x  y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseSums(b)
		if err != nil {
			return
		}
		for name, sum := range m {
			if name != filepath.Base(name) || name == ".." || len(sum) != 64 {
				t.Fatalf("accepted %q → %q", name, sum)
			}
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte("v1.2.3\n"))
	f.Add([]byte("v1.2.3-rc.1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseIndex(b)
		if err != nil {
			return
		}
		if !versionRE.MatchString(v) || strings.ContainsAny(v, "/\\\n ") {
			t.Fatalf("accepted %q", v)
		}
		if _, ok := Compare(v, v); !ok {
			t.Fatalf("accepted %q that Compare refuses", v)
		}
	})
}

// installedHere are the binaries the tests install: the containerd shim is
// not among them, so an update must not add it.
var installedHere = []string{"mvmctl", "mvm-agent", "mvm-supervisor"}

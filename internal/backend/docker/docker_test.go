package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"", DefaultSocket, false},
		{"unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock", false},
		{"unix://relative.sock", "", true},
		{"tcp://10.0.0.1:2375", "", true},
		{"ssh://box", "", true},
	}
	for _, tt := range tests {
		got, err := socketPath(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("socketPath(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestMapState(t *testing.T) {
	tests := []struct {
		status      string
		paused, oom bool
		errMsg      string
		want        backend.State
	}{
		{status: "running", want: backend.StateRunning},
		{status: "running", paused: true, want: backend.StatePaused},
		{status: "paused", want: backend.StatePaused},
		{status: "created", want: backend.StateCreating},
		{status: "restarting", want: backend.StateStarting},
		{status: "removing", want: backend.StateStopping},
		{status: "exited", want: backend.StateStopped},
		{status: "exited", oom: true, want: backend.StateFailed},
		{status: "exited", errMsg: "mount failed", want: backend.StateFailed},
		{status: "dead", want: backend.StateFailed},
	}
	for _, tt := range tests {
		var cs containerState
		cs.State.Status, cs.State.Paused, cs.State.OOMKilled, cs.State.Error = tt.status, tt.paused, tt.oom, tt.errMsg
		if got := mapState(&cs); got != tt.want {
			t.Errorf("mapState(%+v) = %s, want %s", cs.State, got, tt.want)
		}
	}
}

func TestBuildCreate(t *testing.T) {
	spec := backend.Spec{Name: "web", Dir: "/s/vms/web", CPUs: 2, MemoryMiB: 256,
		Guest: &guestcfg.Config{Version: 1, Name: "web", Hostname: "web-host"}}
	b := buildCreate(spec, "mvm-image:abc-f1", "/s/vms/web/guestconfig/123", 1000, 100)
	if b.Hostname != "web-host" || b.Image != "mvm-image:abc-f1" {
		t.Errorf("hostname/image: %q %q", b.Hostname, b.Image)
	}
	wantCmd := []string{"--config", "/mnt/config/mvm.json", "--console", "/run/mvm/console.log", "--owner", "1000:100"}
	if !reflect.DeepEqual(b.Cmd, wantCmd) {
		t.Errorf("cmd = %q, want %q", b.Cmd, wantCmd)
	}
	wantLabels := map[string]string{"mvm.managed": "1", "mvm.vm": "web", "mvm.dir": "/s/vms/web"}
	if !reflect.DeepEqual(b.Labels, wantLabels) {
		t.Errorf("labels = %v", b.Labels)
	}
	hc := b.HostConfig
	wantBinds := []string{"/s/vms/web/run:/run/mvm", "/s/vms/web/guestconfig/123:/mnt/config"}
	if !reflect.DeepEqual(hc.Binds, wantBinds) {
		t.Errorf("binds = %q", hc.Binds)
	}
	if hc.NanoCPUs != 2e9 || hc.Memory != 256<<20 || hc.MemorySwap != hc.Memory || !hc.AutoRemove || hc.Init {
		t.Errorf("host config = %+v", hc)
	}
	// Unset limits stay unset (Docker's defaults), not zero-valued limits.
	raw, _ := json.Marshal(buildCreate(backend.Spec{Name: "x", Dir: "/d"}, "i", "/d/c", 0, 0))
	if bytes.Contains(raw, []byte("NanoCpus")) || bytes.Contains(raw, []byte(`"Memory"`)) {
		t.Errorf("unset limits serialised: %s", raw)
	}
}

func TestContainerNameSeparatesStateRoots(t *testing.T) {
	a, b := ContainerName("web", "/a/vms/web"), ContainerName("web", "/b/vms/web")
	if a == b || !strings.HasPrefix(a, "mvm-web-") {
		t.Errorf("names %q %q", a, b)
	}
	if a != ContainerName("web", "/a/vms/web") {
		t.Error("name not stable")
	}
}

func TestImageTag(t *testing.T) {
	if got := imageTag("sha256:0123456789abcdef0123"); got != "0123456789ab-f"+imageFormat {
		t.Errorf("imageTag = %q", got)
	}
	ch := importChanges("sha256:ff")
	if ch[0] != `ENTRYPOINT ["/sbin/mvm-agent","container"]` {
		t.Errorf("entrypoint change = %q", ch[0])
	}
}

func TestGuestConfigForcesUnixTransport(t *testing.T) {
	in := &guestcfg.Config{Version: 1, Name: "a", Hostname: "a",
		Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: "x"}}
	got := guestConfig(backend.Spec{Name: "a", Guest: in})
	if got.Transport != (guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: GuestSocket}) {
		t.Errorf("transport = %+v", got.Transport)
	}
	if in.Transport.Kind != guestcfg.TransportSerial {
		t.Error("caller's config modified")
	}
	if def := guestConfig(backend.Spec{Name: "b"}); def.Hostname != "b" || def.Validate() != nil {
		t.Errorf("default config = %+v", def)
	}
}

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	spec := backend.Spec{Name: "a", Dir: dir, SerialLog: filepath.Join(dir, "serial.log")}
	if err := os.WriteFile(spec.SerialLog, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgDir, err := layout(spec)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(cfgDir) != filepath.Join(dir, configParent) {
		t.Errorf("config dir %s is not under %s", cfgDir, configParent)
	}
	f, err := os.Open(filepath.Join(cfgDir, guestcfg.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := guestcfg.Decode(f)
	if err != nil || c.Transport.UnixPath != GuestSocket {
		t.Fatalf("mvm.json: %+v %v", c, err)
	}
	target, err := os.Readlink(spec.SerialLog)
	if err != nil || target != filepath.Join(runDir, consoleLog) {
		t.Errorf("serial log link = %q, %v", target, err)
	}
	st, _ := os.Stat(filepath.Join(dir, runDir))
	if st.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode %v", st.Mode().Perm())
	}
}

func TestWriteTarReproducible(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "lost+found"), 0o700))
	must(os.WriteFile(filepath.Join(root, "bin", "busybox"), []byte("elf"), 0o755))
	must(os.Symlink("busybox", filepath.Join(root, "bin", "sh")))
	must(os.WriteFile(filepath.Join(root, "a"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(root, "a"), 0o755|os.ModeSetuid))

	var one, two bytes.Buffer
	must(writeTar(context.Background(), root, &one))
	now := time.Now()
	must(os.Chtimes(filepath.Join(root, "a"), now, now))
	must(writeTar(context.Background(), root, &two))
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatal("tar differs after an mtime change")
	}
	tr := tar.NewReader(&one)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(err)
		names = append(names, h.Name)
		if !h.ModTime.Equal(tarTime) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		if h.Name == "a" && h.Mode&0o4000 == 0 {
			t.Errorf("setuid bit lost: %o", h.Mode)
		}
		if h.Name == "bin/sh" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox") {
			t.Errorf("symlink: %+v", h)
		}
	}
	want := []string{"a", "bin/", "bin/busybox", "bin/sh"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries %q, want %q", names, want)
	}
}

// fakeEngine serves canned Engine API answers on a unix socket and records
// the requests.
type fakeEngine struct {
	mu     sync.Mutex
	reqs   []string
	answer func(w http.ResponseWriter, r *http.Request)
}

func newFake(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*engine, *fakeEngine) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeEngine{answer: answer}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		f.answer(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return newEngineAt(sock), f
}

func (f *fakeEngine) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

func apiErr(w http.ResponseWriter, status int, msg string) {
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func TestHandleAgainstFakeEngine(t *testing.T) {
	gone := false
	e, f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/json") && gone:
			apiErr(w, 404, "No such container: c")
		case strings.HasSuffix(r.URL.Path, "/json"):
			io.WriteString(w, `{"Id":"abc","State":{"Status":"running","Running":true,"Pid":4242}}`)
		case strings.HasSuffix(r.URL.Path, "/stop"):
			gone = true
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodDelete:
			apiErr(w, 409, "removal of container c is already in progress")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	h := &Handle{dir: t.TempDir(), rec: record{Backend: Name, Container: "c"}, eng: e}
	ctx := context.Background()
	if st, err := h.State(ctx); err != nil || st != backend.StateRunning {
		t.Fatalf("state %v %v", st, err)
	}
	if h.PID() != 4242 {
		t.Errorf("pid %d", h.PID())
	}
	if err := h.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx, 2500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st, err := h.State(ctx); err != nil || st != backend.StateStopped {
		t.Fatalf("gone container: %v %v, want stopped", st, err)
	}
	if err := h.Remove(ctx); err != nil { // 409 in progress, then 404
		t.Fatal(err)
	}
	want := []string{
		"GET /v1.40/containers/c/json",
		"GET /v1.40/containers/c/json",
		"POST /v1.40/containers/c/pause",
		"POST /v1.40/containers/c/unpause",
		"POST /v1.40/containers/c/stop?t=3",
		"GET /v1.40/containers/c/json",
		"GET /v1.40/containers/c/json",
		"DELETE /v1.40/containers/c?force=1&v=1",
		"GET /v1.40/containers/c/json",
	}
	if got := f.requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEngineErrors(t *testing.T) {
	e, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1.40/images/create") {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, `{"status":"importing"}`+"\n"+`{"error":"archive/tar: invalid tar header"}`+"\n")
			return
		}
		apiErr(w, 500, "boom")
	})
	ctx := context.Background()
	err := e.ping(ctx)
	if !isStatus(err, 500) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("ping: %v", err)
	}
	err = e.importImage(ctx, "r", "t", nil, strings.NewReader("not a tar"))
	if err == nil || !strings.Contains(err.Error(), "invalid tar header") {
		t.Errorf("import error in the stream not reported: %v", err)
	}
}

func TestAvailableWithoutDaemon(t *testing.T) {
	e := newEngineAt(filepath.Join(t.TempDir(), "missing.sock"))
	err := e.available(context.Background())
	if err == nil || !strings.Contains(err.Error(), "docker daemon not running") {
		t.Errorf("available: %v", err)
	}
}

func TestSnapshotIsNotACapability(t *testing.T) {
	b := &Backend{}
	if b.Capabilities().Snapshot {
		t.Fatal("docker claims snapshots")
	}
	var h backend.Handle = &Handle{}
	if _, ok := h.(backend.Snapshotter); ok {
		t.Error("handle implements Snapshotter")
	}
	err := backend.Unsupported(b.Name(), "snapshot")
	if !errors.Is(err, backend.ErrUnsupported) || !strings.Contains(err.Error(), `"docker" does not support snapshot`) {
		t.Errorf("error %v", err)
	}
}

func TestPruneImages(t *testing.T) {
	e, f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/containers/json"):
			io.WriteString(w, `[{"Id":"c1","ImageID":"3"}]`)
			return
		case r.Method == http.MethodGet:
			io.WriteString(w, `[{"Id":"1","RepoTags":["mvm-image:aaa-f1"],"Labels":{"mvm.managed":"1","mvm.digest":"sha256:aaa"}},`+
				`{"Id":"2","RepoTags":["mvm-image:bbb-f1"],"Labels":{"mvm.managed":"1","mvm.digest":"sha256:bbb"},"Size":42},`+
				`{"Id":"3","RepoTags":["mvm-image:ccc-f1"],"Labels":{"mvm.managed":"1","mvm.digest":"sha256:ccc"}},`+
				`{"Id":"4","RepoTags":["other:latest"],"Labels":{"mvm.digest":"sha256:ddd"}}]`)
			return
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "[]")
	})
	removed, err := e.pruneImages(context.Background(), func(d string) bool { return d == "sha256:aaa" })
	if err != nil || !reflect.DeepEqual(removed, []string{"mvm-image:bbb-f1"}) {
		t.Fatalf("removed %v, %v", removed, err)
	}
	reqs := f.requests()
	if last := reqs[len(reqs)-1]; last != "DELETE /v1.40/images/mvm-image:bbb-f1" {
		t.Errorf("last request %q", last)
	}
}

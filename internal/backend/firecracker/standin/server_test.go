package standin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeGuest struct {
	done   chan struct{}
	paused bool
}

func (g *fakeGuest) Pause(context.Context) error  { g.paused = true; return nil }
func (g *fakeGuest) Resume(context.Context) error { g.paused = false; return nil }
func (g *fakeGuest) Done() <-chan struct{}        { return g.done }
func (g *fakeGuest) Kill()                        {}
func (g *fakeGuest) DialAgent(_ context.Context, port uint32) (net.Conn, error) {
	if port != 5252 {
		return nil, io.EOF
	}
	a, b := net.Pipe()
	go func() { // echo four bytes, then hang up (net.Pipe has no half-close)
		buf := make([]byte, 4)
		io.ReadFull(b, buf)
		b.Write(buf)
		b.Close()
	}()
	return a, nil
}

type env struct {
	t      *testing.T
	srv    *Server
	client *http.Client
	dir    string
	kernel string
	disk   string
	mu     sync.Mutex
	booted *Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.kernel = filepath.Join(e.dir, "vmlinux")
	e.disk = filepath.Join(e.dir, "root.img")
	for _, p := range []string{e.kernel, e.disk} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(_ context.Context, cfg Config) (Guest, error) {
		e.mu.Lock()
		e.booted = &cfg
		e.mu.Unlock()
		return &fakeGuest{done: make(chan struct{})}, nil
	}
	e.srv = NewServer("vm1", run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sock := filepath.Join(e.dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(e.srv)
	hs.Listener = ln
	hs.Start()
	t.Cleanup(func() { hs.Close(); e.srv.Close() })
	e.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	return e
}

// do sends a request and returns the status and fault_message.
func (e *env) do(method, path, body string) (int, string) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://localhost"+path, r)
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &f)
	if resp.StatusCode >= 400 && f.FaultMessage == "" {
		e.t.Fatalf("%s %s: %d without fault_message: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, f.FaultMessage
}

func (e *env) must(method, path, body string) {
	e.t.Helper()
	if st, msg := e.do(method, path, body); st != 204 {
		e.t.Fatalf("%s %s %s: %d %s", method, path, body, st, msg)
	}
}

func (e *env) configure() {
	e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.kernel+`","boot_args":"console=ttyS0"}`)
	e.must("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`)
	e.must("PUT", "/drives/root", `{"drive_id":"root","path_on_host":"`+e.disk+`","is_root_device":true,"is_read_only":false}`)
	e.must("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+filepath.Join(e.dir, "v.sock")+`"}`)
	e.must("PUT", "/entropy", `{}`)
}

// TestRefusesWhatFirecrackerRefuses is the table of bad requests: each is
// refused with 400 and a fault_message, as Firecracker v1.16 refuses it.
func TestRefusesWhatFirecrackerRefuses(t *testing.T) {
	pre := []struct {
		name, method, path, body, fault string
	}{
		{"unknown path", "GET", "/nope", "", "Invalid request method and/or path"},
		{"unknown method", "DELETE", "/boot-source", "", "Invalid request method and/or path"},
		{"GET with body", "GET", "/", `{}`, "GET request cannot have a body."},
		{"empty PUT", "PUT", "/boot-source", "", "Empty PUT request."},
		{"empty PATCH", "PATCH", "/vm", "", "Empty PATCH request."},
		{"not JSON", "PUT", "/boot-source", `{"kernel_image_path":`, "deserializing"},
		{"not an object", "PUT", "/boot-source", `[1]`, "deserializing"},
		{"unknown field", "PUT", "/boot-source", `{"kernel_image_path":"/k","kernel_args":"x"}`, "unknown field `kernel_args`"},
		{"boot-source missing kernel", "PUT", "/boot-source", `{"boot_args":"x"}`, "missing field `kernel_image_path`"},
		{"boot-source kernel missing", "PUT", "/boot-source", `{"kernel_image_path":"/does/not/exist"}`, "kernel file cannot be opened"},
		{"boot-source wrong type", "PUT", "/boot-source", `{"kernel_image_path":7}`, "invalid type for field `kernel_image_path`"},
		{"machine-config missing vcpus", "PUT", "/machine-config", `{"mem_size_mib":128}`, "missing field `vcpu_count`"},
		{"machine-config missing mem", "PUT", "/machine-config", `{"vcpu_count":1}`, "missing field `mem_size_mib`"},
		{"vcpu_count 0", "PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":128}`, "vCPU number is invalid"},
		{"vcpu_count 33", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, "vCPU number is invalid"},
		{"vcpu_count negative", "PUT", "/machine-config", `{"vcpu_count":-1,"mem_size_mib":128}`, "invalid type for field `vcpu_count`"},
		{"smt odd vcpus", "PUT", "/machine-config", `{"vcpu_count":3,"mem_size_mib":128,"smt":true}`, "vCPU number is invalid"},
		{"mem 0", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":0}`, "memory size (MiB) is invalid"},
		{"huge pages odd mem", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":129,"huge_pages":"2M"}`, "memory size (MiB) is invalid"},
		{"huge pages enum", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"1G"}`, "unknown variant `1G`"},
		{"drive id with dash", "PUT", "/drives/root-1", `{"drive_id":"root-1","path_on_host":"/x","is_root_device":true,"is_read_only":false}`, "Invalid ID"},
		{"drive id mismatch", "PUT", "/drives/root", `{"drive_id":"data","path_on_host":"/x","is_root_device":true,"is_read_only":false}`, "does not match the id from the body"},
		{"drive missing is_root_device", "PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/x","is_read_only":false}`, "missing field `is_root_device`"},
		{"drive missing path", "PUT", "/drives/root", `{"drive_id":"root","is_root_device":true,"is_read_only":false}`, "path_on_host and is_read_only are required"},
		{"drive file missing", "PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/does/not/exist","is_root_device":true,"is_read_only":false}`, "BackingFile"},
		{"drive cache_type enum", "PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/x","is_root_device":true,"is_read_only":false,"cache_type":"Fast"}`, "unknown variant `Fast`"},
		{"net missing host_dev_name", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0"}`, "missing field `host_dev_name`"},
		{"net bad mac", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"zz"}`, "invalid MAC"},
		{"net mtu too small", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":67}`, "Invalid MTU"},
		{"net tap name too long", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"a-very-long-tap-name"}`, "invalid interface name"},
		{"vsock cid 2", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"/tmp/x.sock"}`, "Invalid guest CID"},
		{"vsock missing uds_path", "PUT", "/vsock", `{"guest_cid":3}`, "missing field `uds_path`"},
		{"action unknown", "PUT", "/actions", `{"action_type":"Reboot"}`, "unknown variant `Reboot`"},
		{"action missing", "PUT", "/actions", `{}`, "missing field `action_type`"},
		{"start without kernel", "PUT", "/actions", `{"action_type":"InstanceStart"}`, "boot source"},
		{"ctrl-alt-del before start", "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, "before starting"},
		{"pause before start", "PATCH", "/vm", `{"state":"Paused"}`, "before starting"},
		{"vm state enum", "PATCH", "/vm", `{"state":"Stopped"}`, "unknown variant `Stopped`"},
		{"snapshot create before start", "PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m"}`, "before starting"},
		{"snapshot create missing mem", "PUT", "/snapshot/create", `{"snapshot_path":"/s"}`, "missing field `mem_file_path`"},
		{"snapshot load both mem sources", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m","mem_backend":{"backend_type":"File","backend_path":"/m"}}`, "exactly one"},
		{"snapshot load neither", "PUT", "/snapshot/load", `{"snapshot_path":"/s"}`, "exactly one"},
		{"balloon missing deflate", "PUT", "/balloon", `{"amount_mib":1}`, "missing field `deflate_on_oom`"},
		{"payload too large", "PUT", "/boot-source", `{"kernel_image_path":"` + strings.Repeat("a", maxPayload) + `"}`, "larger than the limit"},
	}
	e := newEnv(t)
	for _, tt := range pre {
		t.Run("pre/"+tt.name, func(t *testing.T) {
			e.t = t
			st, msg := e.do(tt.method, tt.path, tt.body)
			if st != 400 || !strings.Contains(msg, tt.fault) {
				t.Fatalf("got %d %q, want 400 containing %q", st, msg, tt.fault)
			}
		})
	}
	e.t = t
	e.must("PUT", "/drives/root", `{"drive_id":"root","path_on_host":"`+e.disk+`","is_root_device":true,"is_read_only":false}`)
	t.Run("second root drive", func(t *testing.T) {
		e.t = t
		st, msg := e.do("PUT", "/drives/data", `{"drive_id":"data","path_on_host":"`+e.disk+`","is_root_device":true,"is_read_only":true}`)
		if st != 400 || !strings.Contains(msg, "root block device already exists") {
			t.Fatalf("%d %q", st, msg)
		}
	})
	t.Run("snapshot load after configuring", func(t *testing.T) {
		e.t = t
		st, msg := e.do("PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m"}`)
		if st != 400 || !strings.Contains(msg, "not allowed after configuring boot-specific resources") {
			t.Fatalf("%d %q", st, msg)
		}
	})
	e.t = t
	e.configure()
	t.Run("vsock uds_path exists", func(t *testing.T) {
		e.t = t
		st, msg := e.do("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+e.disk+`"}`)
		if st != 400 || !strings.Contains(msg, "UnixBind") {
			t.Fatalf("%d %q", st, msg)
		}
	})
	e.t = t
	e.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)

	post := []struct {
		name, method, path, body, fault string
	}{
		{"boot-source after start", "PUT", "/boot-source", `{"kernel_image_path":"` + e.kernel + `"}`, msgAfterStart},
		{"machine-config after start", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, msgAfterStart},
		{"drive after start", "PUT", "/drives/data", `{"drive_id":"data","path_on_host":"` + e.disk + `","is_root_device":false,"is_read_only":true}`, msgAfterStart},
		{"net after start", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`, msgAfterStart},
		{"vsock after start", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"/tmp/y.sock"}`, msgAfterStart},
		{"entropy after start", "PUT", "/entropy", `{}`, msgAfterStart},
		{"serial after start", "PUT", "/serial", `{"serial_out_path":"/tmp/s"}`, msgAfterStart},
		{"second InstanceStart", "PUT", "/actions", `{"action_type":"InstanceStart"}`, msgAfterStart},
		{"snapshot load after start", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m"}`, msgAfterStart},
		{"snapshot create while running", "PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m"}`, "must be paused"},
		{"flush metrics unconfigured", "PUT", "/actions", `{"action_type":"FlushMetrics"}`, "metrics system is not initialized"},
	}
	for _, tt := range post {
		t.Run("post/"+tt.name, func(t *testing.T) {
			e.t = t
			st, msg := e.do(tt.method, tt.path, tt.body)
			if st != 400 || !strings.Contains(msg, tt.fault) {
				t.Fatalf("got %d %q, want 400 containing %q", st, msg, tt.fault)
			}
		})
	}
}

func TestAcceptsTheBootSequence(t *testing.T) {
	e := newEnv(t)
	e.configure()
	e.must("PUT", "/drives/config", `{"drive_id":"config","path_on_host":"`+e.disk+`","is_root_device":false,"is_read_only":true}`)
	e.must("PUT", "/network-interfaces/net0", `{"iface_id":"net0","host_dev_name":"tap0","guest_mac":"06:00:00:00:00:02"}`)
	e.must("PUT", "/serial", `{"serial_out_path":"/tmp/serial.log"}`)
	e.must("PUT", "/logger", `{"level":"Info"}`)
	if st, _ := e.do("GET", "/", ""); st != 200 {
		t.Fatal(st)
	}
	e.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	e.mu.Lock()
	cfg := e.booted
	e.mu.Unlock()
	if cfg == nil || cfg.VCPUs != 2 || cfg.MemMiB != 256 || len(cfg.Drives) != 2 || !cfg.Drives[0].Root ||
		cfg.Drives[1].ID != "config" || !cfg.Drives[1].ReadOnly || cfg.SerialOut != "/tmp/serial.log" ||
		len(cfg.NICs) != 1 || cfg.NICs[0].TAP != "tap0" || !cfg.Entropy || cfg.VsockCID != 3 {
		t.Fatalf("booted with %+v", cfg)
	}
	e.must("PATCH", "/vm", `{"state":"Paused"}`)
	e.must("PATCH", "/vm", `{"state":"Paused"}`) // idempotent
	var info map[string]string
	req, _ := http.NewRequest("GET", "http://localhost/", nil)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info["state"] != "Paused" || info["app_name"] != "Firecracker" {
		t.Fatalf("GET / = %v", info)
	}
	e.must("PATCH", "/vm", `{"state":"Resumed"}`)
}

func TestVsockBridge(t *testing.T) {
	e := newEnv(t)
	e.configure()
	sock := filepath.Join(e.dir, "v.sock")
	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	// Before start nothing listens in the guest: EOF instead of OK.
	c := dial()
	io.WriteString(c, "CONNECT 5252\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("before start got %q", b)
	}
	c.Close()
	e.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	tests := []struct {
		line, want string
	}{
		{"CONNECT 5252\nping", "OK 1073741825\nping"},
		{"connect 5252\nping", "OK 1073741826\nping"},
		{"CONNECT 99\n", ""},
		{"HELLO 5252\n", ""},
		{"CONNECT " + strings.Repeat("9", 40), ""},
	}
	for _, tt := range tests {
		c := dial()
		io.WriteString(c, tt.line)
		c.(*net.UnixConn).CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != tt.want {
			t.Errorf("%q: got %q, want %q", tt.line, b, tt.want)
		}
	}
}

func TestQEMUCmdline(t *testing.T) {
	got := qemuCmdline("console=ttyS0 reboot=k panic=1 pci=off i8042.noaux mvm.x=1 8250.nr_uarts=0")
	if got != "i8042.noaux mvm.x=1" {
		t.Fatalf("got %q", got)
	}
}

// savingGuest is a fakeGuest that can be saved.
type savingGuest struct{ fakeGuest }

func (g *savingGuest) Snapshot(_ context.Context, dir string) error { return os.Mkdir(dir, 0o700) }
func (g *savingGuest) AgentPort() uint32                            { return 5252 }

func TestSnapshotCreateAndLoad(t *testing.T) {
	e := newEnv(t)
	e.srv.Run = func(context.Context, Config) (Guest, error) {
		return &savingGuest{fakeGuest{done: make(chan struct{})}}, nil
	}
	e.configure()
	e.must("PUT", "/network-interfaces/net0", `{"iface_id":"net0","host_dev_name":"tap0","guest_mac":"06:00:00:00:00:02"}`)
	e.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	e.must("PATCH", "/vm", `{"state":"Paused"}`)
	snap := filepath.Join(e.dir, "snap")
	os.Mkdir(snap, 0o700)
	state, mem := filepath.Join(snap, "vmstate"), filepath.Join(snap, "mem")
	if st, msg := e.do("PUT", "/snapshot/create", `{"snapshot_type":"Diff","snapshot_path":"`+state+`","mem_file_path":"`+mem+`"}`); st != 400 || !strings.Contains(msg, "diff") {
		t.Fatalf("diff: %d %q", st, msg)
	}
	e.must("PUT", "/snapshot/create", `{"snapshot_type":"Full","snapshot_path":"`+state+`","mem_file_path":"`+mem+`"}`)
	if st, err := os.Stat(mem); err != nil || !st.IsDir() {
		t.Fatal(err)
	}

	// A fresh process loads it with a new TAP and vsock socket.
	tests := []struct {
		name, body, fault string
		loaded            bool
	}{
		{"unknown iface", `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"},"network_overrides":[{"iface_id":"eth9","host_dev_name":"tap9"}]}`, "unknown interface", false},
		{"missing mem file", `{"snapshot_path":"` + state + `","mem_file_path":"/does/not/exist"}`, "memory file", false},
		{"not a snapshot", `{"snapshot_path":"` + e.disk + `","mem_file_path":"` + mem + `"}`, "not a stand-in snapshot", false},
		{"uffd", `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"Uffd","backend_path":"/s"}}`, "File memory", false},
		{"ok", `{"snapshot_path":"` + state + `","mem_backend":{"backend_type":"File","backend_path":"` + mem + `"},"network_overrides":[{"iface_id":"net0","host_dev_name":"tap7"}],"vsock_override":{"uds_path":"` + filepath.Join(e.dir, "v2.sock") + `"},"resume_vm":true}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEnv(t)
			var got LoadConfig
			f.srv.Load = func(_ context.Context, c LoadConfig) (Guest, error) {
				got = c
				return &fakeGuest{done: make(chan struct{})}, nil
			}
			st, msg := f.do("PUT", "/snapshot/load", tt.body)
			if !tt.loaded {
				if st != 400 || !strings.Contains(msg, tt.fault) {
					t.Fatalf("%d %q, want %q", st, msg, tt.fault)
				}
				select {
				case <-f.srv.Exited():
				default:
					if !strings.Contains(msg, "deserializing") {
						t.Fatal("a failed load must end the process")
					}
				}
				return
			}
			if st != 204 {
				t.Fatalf("%d %q", st, msg)
			}
			if len(got.NICs) != 1 || got.NICs[0].TAP != "tap7" || got.NICs[0].MAC != "06:00:00:00:00:02" || got.AgentPort != 5252 || len(got.Drives) != 1 {
				t.Fatalf("loaded with %+v", got)
			}
			if _, err := os.Stat(filepath.Join(e.dir, "v2.sock")); err != nil {
				t.Fatalf("vsock override not bound: %v", err)
			}
			if st, _ := f.do("PUT", "/boot-source", `{"kernel_image_path":"`+e.kernel+`"}`); st != 400 {
				t.Fatal("a loaded VM takes pre-boot calls")
			}
		})
	}
}

func TestJailerRefuses(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "firecracker")
	os.WriteFile(exe, []byte("x"), 0o755)
	ok := []string{"--id", "vm-1", "--exec-file", exe, "--uid", "100", "--gid", "100", "--chroot-base-dir", t.TempDir()}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--exec-file", exe, "--uid", "1", "--gid", "1"}, "invalid --id"},
		{append(append([]string{}, ok...), "--id", "bad_id"), "invalid --id"},
		{append(append([]string{}, ok...), "--id", strings.Repeat("a", 65)), "invalid --id"},
		{[]string{"--id", "a", "--uid", "1", "--gid", "1"}, "--exec-file is required"},
		{[]string{"--id", "a", "--exec-file", exe}, "--uid and --gid are required"},
		{append(append([]string{}, ok...), "--cgroup-version", "3"), "invalid --cgroup-version"},
		{append(append([]string{}, ok...), "--cgroup", "memory"), "invalid --cgroup"},
		{append(append([]string{}, ok...), "--resource-limit", "cores=1"), "invalid --resource-limit"},
		{append(append([]string{}, ok...), "--netns", "/does/not/exist"), "--netns"},
		{append(append([]string{}, ok...), "--exec-file", "/does/not/exist"), "is not a file"},
		{append(append([]string{}, ok...), "--chroot-base-dir", "rel"), "must be absolute"},
	}
	for _, tt := range tests {
		err := jailer(tt.args)
		if os.Geteuid() != 0 {
			if err == nil || !strings.Contains(err.Error(), "root") {
				t.Fatalf("non-root: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err %v, want %q", tt.args, err, tt.want)
		}
	}
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFC records requests and answers from a table keyed by "METHOD PATH".
type fakeFC struct {
	mu      sync.Mutex
	got     []string // "METHOD PATH BODY"
	answers map[string]func(w http.ResponseWriter)
}

func (f *fakeFC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	key := r.Method + " " + r.URL.Path
	f.mu.Lock()
	f.got = append(f.got, key+" "+string(b))
	a := f.answers[key]
	f.mu.Unlock()
	if a == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	a(w)
}

func serve(t *testing.T, f *fakeFC) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return New(sock)
}

func fault(status int, msg string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
	}
}

func jsonBody(v string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, v)
	}
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(c *Client) error
		want string
	}{
		{"boot-source", func(c *Client) error {
			return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k", BootArgs: "console=ttyS0"})
		}, `PUT /boot-source {"kernel_image_path":"/k","boot_args":"console=ttyS0"}`},
		{"machine-config", func(c *Client) error {
			return c.PutMachineConfig(ctx, MachineConfig{VcpuCount: 2, MemSizeMib: 256})
		}, `PUT /machine-config {"vcpu_count":2,"mem_size_mib":256}`},
		{"drive", func(c *Client) error {
			return c.PutDrive(ctx, Drive{DriveID: "root", PathOnHost: "/r", IsRootDevice: true})
		}, `PUT /drives/root {"drive_id":"root","path_on_host":"/r","is_root_device":true,"is_read_only":false}`},
		{"net", func(c *Client) error {
			return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "net0", HostDevName: "tap0", GuestMAC: "06:00:00:00:00:01"})
		}, `PUT /network-interfaces/net0 {"iface_id":"net0","host_dev_name":"tap0","guest_mac":"06:00:00:00:00:01"}`},
		{"vsock", func(c *Client) error { return c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/v.sock"}) },
			`PUT /vsock {"guest_cid":3,"uds_path":"/v.sock"}`},
		{"entropy", func(c *Client) error { return c.PutEntropy(ctx, Entropy{}) }, `PUT /entropy {}`},
		{"serial", func(c *Client) error { return c.PutSerial(ctx, Serial{SerialOutPath: "/s.log"}) },
			`PUT /serial {"serial_out_path":"/s.log"}`},
		{"logger", func(c *Client) error { return c.PutLogger(ctx, Logger{LogPath: "/l", Level: "Info"}) },
			`PUT /logger {"log_path":"/l","level":"Info"}`},
		{"start", func(c *Client) error { return c.Start(ctx) }, `PUT /actions {"action_type":"InstanceStart"}`},
		{"ctrl-alt-del", func(c *Client) error { return c.SendCtrlAltDel(ctx) }, `PUT /actions {"action_type":"SendCtrlAltDel"}`},
		{"pause", func(c *Client) error { return c.Pause(ctx) }, `PATCH /vm {"state":"Paused"}`},
		{"resume", func(c *Client) error { return c.Resume(ctx) }, `PATCH /vm {"state":"Resumed"}`},
		{"snapshot-create", func(c *Client) error {
			return c.CreateSnapshot(ctx, SnapshotCreate{SnapshotType: SnapshotFull, SnapshotPath: "/s", MemFilePath: "/m"})
		}, `PUT /snapshot/create {"snapshot_type":"Full","snapshot_path":"/s","mem_file_path":"/m"}`},
		{"snapshot-load", func(c *Client) error {
			return c.LoadSnapshot(ctx, SnapshotLoad{
				SnapshotPath: "/s", MemBackend: &MemBackend{BackendType: "File", BackendPath: "/m"},
				NetworkOverrides: []NetworkOverride{{IfaceID: "net0", HostDevName: "tap9"}},
				VsockOverride:    &VsockOverride{UDSPath: "/v2.sock"}, ResumeVM: true,
			})
		}, `PUT /snapshot/load {"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"resume_vm":true,"network_overrides":[{"iface_id":"net0","host_dev_name":"tap9"}],"vsock_override":{"uds_path":"/v2.sock"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFC{}
			c := serve(t, f)
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			if len(f.got) != 1 || f.got[0] != tt.want {
				t.Fatalf("sent %q\nwant %q", f.got, tt.want)
			}
		})
	}
}

func TestFaultMessage(t *testing.T) {
	f := &fakeFC{answers: map[string]func(http.ResponseWriter){
		"PUT /boot-source": fault(400, "The requested operation is not supported after starting the microVM."),
		"PUT /vsock":       jsonBody("not json at all\x01"),
	}}
	c := f
	cl := serve(t, c)
	err := cl.PutBootSource(context.Background(), BootSource{KernelImagePath: "/k"})
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Fault, "after starting") || !IsFault(err) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "PUT /boot-source: 400: The requested operation") {
		t.Fatalf("message %q", err)
	}
	// A 200 with garbage where no body is expected is fine; a 4xx keeps a
	// printable excerpt.
	f.answers["PUT /vsock"] = func(w http.ResponseWriter) { w.WriteHeader(500); io.WriteString(w, "boom\x01") }
	err = cl.PutVsock(context.Background(), Vsock{GuestCID: 3, UDSPath: "/v"})
	if !errors.As(err, &e) || e.Status != 500 || e.Fault != "boom?" {
		t.Fatalf("err = %v", err)
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		body    string
		want    string
		wantErr string
	}{
		{`{"firecracker_version":"1.16.1"}`, "1.16.1", ""},
		{`{"firecracker_version":"1.17.0-dev"}`, "1.17.0", ""},
		{`{"firecracker_version":"1.14.0"}`, "1.14.0", ""},
		{`{"firecracker_version":"1.13.1"}`, "", "1.13.1 is too old: mvm needs 1.14.0 or newer"},
		{`{"firecracker_version":"garbage"}`, "", "want MAJOR.MINOR.PATCH"},
		{`{}`, "", "no firecracker_version"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			c := serve(t, &fakeFC{answers: map[string]func(http.ResponseWriter){"GET /version": jsonBody(tt.body)}})
			v, err := c.CheckVersion(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || v.String() != tt.want {
				t.Fatalf("v=%v err=%v", v, err)
			}
		})
	}
}

func TestInstanceAndDeadline(t *testing.T) {
	f := &fakeFC{answers: map[string]func(http.ResponseWriter){
		"GET /": jsonBody(`{"app_name":"Firecracker","id":"vm1","state":"Running","vmm_version":"1.16.1","extra":1}`),
		"GET /machine-config": func(w http.ResponseWriter) {
			time.Sleep(2 * time.Second)
		},
	}}
	c := serve(t, f)
	info, err := c.Instance(context.Background())
	if err != nil || info.State != StateRunning || info.ID != "vm1" {
		t.Fatalf("info=%+v err=%v", info, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.MachineConfig(ctx); err == nil || time.Since(start) > time.Second {
		t.Fatalf("hung call: err=%v after %v", err, time.Since(start))
	}
}

func TestWaitReady(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	c := New(sock)
	exited := make(chan struct{})
	close(exited)
	if err := c.WaitReady(context.Background(), exited); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("err = %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return
		}
		srv := &http.Server{Handler: &fakeFC{answers: map[string]func(http.ResponseWriter){"GET /": jsonBody(`{"state":"Not started"}`)}}}
		t.Cleanup(func() { srv.Close() })
		srv.Serve(ln)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{"root": true, "net_0": true, "A9": true, "": false, "a-b": false, "a.b": false, "ü": false, "a/b": false} {
		if err := CheckID(id); (err == nil) != ok {
			t.Errorf("CheckID(%q) = %v", id, err)
		}
	}
	c := New("/nonexistent")
	if err := c.PutDrive(context.Background(), Drive{DriveID: "bad-id"}); err == nil || IsFault(err) {
		t.Fatalf("bad id sent: %v", err)
	}
}

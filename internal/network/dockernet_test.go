package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/dockerapi"
)

// fakeDocker is an Engine API daemon holding networks in memory.
type fakeDocker struct {
	mu     sync.Mutex
	nets   map[string]*dockerNetwork // by ID
	subnet string                    // what "Docker" picks for new networks
	nextID int
	reqs   []string
}

func (f *fakeDocker) find(ref string) *dockerNetwork {
	for _, d := range f.nets {
		if d.ID == ref || d.Name == ref {
			return d
		}
	}
	return nil
}

func (f *fakeDocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
	ref := strings.TrimPrefix(r.URL.Path, "/"+dockerapi.APIVersion+"/networks/")
	fail := func(status int, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"message": msg})
	}
	switch {
	case r.Method == http.MethodPost && ref == "create":
		var body dockerNetworkCreate
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			fail(http.StatusBadRequest, err.Error())
			return
		}
		if f.find(body.Name) != nil {
			fail(http.StatusConflict, "network with name "+body.Name+" already exists")
			return
		}
		f.nextID++
		d := &dockerNetwork{ID: fmt.Sprintf("id%d", f.nextID), Name: body.Name, Driver: body.Driver, Internal: body.Internal, Labels: body.Labels}
		d.IPAM.Config = append(d.IPAM.Config, struct {
			Subnet  string `json:"Subnet"`
			Gateway string `json:"Gateway"`
		}{Subnet: f.subnet})
		f.nets[d.ID] = d
		json.NewEncoder(w).Encode(map[string]string{"Id": d.ID})
	case r.Method == http.MethodGet:
		d := f.find(ref)
		if d == nil {
			fail(http.StatusNotFound, "network "+ref+" not found")
			return
		}
		json.NewEncoder(w).Encode(d)
	case r.Method == http.MethodDelete:
		d := f.find(ref)
		if d == nil {
			fail(http.StatusNotFound, "network "+ref+" not found")
			return
		}
		if len(d.Containers) > 0 {
			fail(http.StatusForbidden, "error while removing network: network has active endpoints")
			return
		}
		delete(f.nets, d.ID)
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(http.StatusNotImplemented, r.Method+" "+r.URL.Path)
	}
}

// dockerNetManager is a user-mode network manager on temp dirs whose
// Docker is a fake daemon.
func dockerNetManager(t *testing.T) (*Manager, *fakeDocker) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDocker{nets: map[string]*dockerNetwork{}, subnet: "172.30.0.0/16"}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	m := NewManager(filepath.Join(dir, "share"), filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.Privileged = func() bool { return false }
	m.Docker = dockerapi.NewAt(sock)
	return m, f
}

func TestDockerNetworkName(t *testing.T) {
	a := NewManager("/a/share", "/a/state", nil)
	b := NewManager("/b/share", "/b/state", nil)
	tests := []struct {
		m    *Manager
		name string
	}{{a, "default"}, {a, "lab"}, {b, "lab"}}
	seen := map[string]bool{}
	for _, tt := range tests {
		got := tt.m.DockerNetworkName(tt.name)
		if !strings.HasPrefix(got, "mvm-"+tt.name+"-") || len(got) != len("mvm-"+tt.name+"-")+6 {
			t.Errorf("DockerNetworkName(%q) = %q, want mvm-%s-<6 hex>", tt.name, got, tt.name)
		}
		if seen[got] {
			t.Errorf("%q given twice", got)
		}
		seen[got] = true
		if again := NewManager(filepath.Dir(tt.m.Store.Dir())+"/", "/x", nil).DockerNetworkName(tt.name); again != got {
			t.Errorf("name not stable across managers of one share dir: %q vs %q", again, got)
		}
	}
}

func TestAttachDockerLifecycle(t *testing.T) {
	m, f := dockerNetManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "sealed", Internal: true}); err != nil {
		t.Fatal(err)
	}
	ports := []Port{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"}}
	l, err := m.AttachDocker(ctx, "sealed", "web", ports)
	if err != nil {
		t.Fatal(err)
	}
	want := m.DockerNetworkName("sealed")
	if l.Network.DockerName != want || l.Network.DockerID == "" || l.Attach.TAP != "" || l.Attach.IP != "" {
		t.Fatalf("lease %+v %+v", l.Network, l.Attach)
	}
	d := f.find(want)
	if d == nil || !d.Internal || d.Driver != "bridge" || d.Labels[DockerLabelManaged] != "1" || d.Labels[DockerLabelNetwork] != "sealed" {
		t.Fatalf("docker network %+v", d)
	}
	// Another VM with the same host port is refused; attaching again reuses.
	if _, err := m.AttachDocker(ctx, "sealed", "db", ports); err == nil || !strings.Contains(err.Error(), "already published by VM web") {
		t.Errorf("port clash: %v", err)
	}
	if _, err := m.AttachDocker(ctx, "sealed", "web", ports); err != nil || len(f.nets) != 1 {
		t.Fatalf("second attach: %v, %d networks", err, len(f.nets))
	}
	if err := m.SetAddress("sealed", "web", "172.30.0.2", "02:42:ac:1e:00:02"); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Get("sealed"); n.Attached["web"].IP != "172.30.0.2" || n.Attached["web"].MAC != "02:42:ac:1e:00:02" {
		t.Errorf("address not recorded: %+v", n.Attached["web"])
	}
	if err := m.SetAddress("sealed", "nobody", "172.30.0.9", ""); err == nil {
		t.Error("SetAddress of an unattached VM succeeded")
	}

	// In use by us: refused; in use by a container Docker knows: refused.
	if _, err := m.Remove(ctx, "sealed", false, nil); !errors.Is(err, ErrInUse) {
		t.Errorf("rm with a VM attached: %v", err)
	}
	if err := m.Detach(ctx, "sealed", "web"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	d.Containers = map[string]struct {
		Name string `json:"Name"`
	}{"c1": {Name: "stray"}}
	f.mu.Unlock()
	if _, err := m.Remove(ctx, "sealed", false, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "stray") {
		t.Errorf("rm with a container on the docker network: %v", err)
	}
	f.mu.Lock()
	d.Containers = nil
	f.mu.Unlock()
	if _, err := m.Remove(ctx, "sealed", false, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.nets) != 0 || m.Store.Exists("sealed") {
		t.Errorf("left: docker %v, record %v", f.nets, m.Store.Exists("sealed"))
	}
}

func TestEnsureDockerNetwork(t *testing.T) {
	tests := []struct {
		name string
		// prepare sets up the daemon and the record before the attach.
		prepare func(m *Manager, f *fakeDocker, n *Network)
		err     string
		// creates is how many networks a successful attach creates.
		creates int
	}{
		{name: "fresh", creates: 1},
		{name: "adopt after a crash", creates: 0, prepare: func(m *Manager, f *fakeDocker, n *Network) {
			f.nets["old"] = &dockerNetwork{ID: "old", Name: m.DockerNetworkName(n.Name), Driver: "bridge",
				Labels: map[string]string{DockerLabelManaged: "1", DockerLabelNetwork: n.Name, DockerLabelShare: m.shareTag()}}
		}},
		{name: "recreate when removed behind our back", creates: 1, prepare: func(m *Manager, f *fakeDocker, n *Network) {
			n.DockerID, n.DockerName = "gone", m.DockerNetworkName(n.Name)
		}},
		{name: "foreign network of that name", err: "not made by mvm", prepare: func(m *Manager, f *fakeDocker, n *Network) {
			f.nets["x"] = &dockerNetwork{ID: "x", Name: m.DockerNetworkName(n.Name), Labels: map[string]string{}}
		}},
		{name: "other share dir's network", err: "not made by mvm", prepare: func(m *Manager, f *fakeDocker, n *Network) {
			f.nets["x"] = &dockerNetwork{ID: "x", Name: m.DockerNetworkName(n.Name),
				Labels: map[string]string{DockerLabelManaged: "1", DockerLabelNetwork: n.Name, DockerLabelShare: "ffffff"}}
		}},
		{name: "subnet of one of our bridges", err: "overlaps network br", prepare: func(m *Manager, f *fakeDocker, n *Network) {
			f.subnet = "10.88.0.0/16"
			br := &Network{Name: "br", Mode: ModeBridge, Subnet: "10.88.4.0/24", Gateway: "10.88.4.1", Attached: map[string]*Attachment{}}
			if err := m.Store.Put(br); err != nil {
				panic(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, f := dockerNetManager(t)
			ctx := context.Background()
			n, err := m.Create(ctx, CreateOptions{Name: "lab"})
			if err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				tt.prepare(m, f, n)
				if err := m.Store.Put(n); err != nil {
					t.Fatal(err)
				}
			}
			before := f.nextID
			_, err = m.AttachDocker(ctx, "lab", "web", nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				for id := range f.nets {
					if id != "x" {
						t.Errorf("docker network %s left behind after a refusal", f.nets[id].Name)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.nextID - before; got != tt.creates {
				t.Errorf("created %d docker networks, want %d", got, tt.creates)
			}
			n, _ = m.Get("lab")
			d := f.find(n.DockerID)
			if d == nil || d.Name != n.DockerName {
				t.Errorf("record names %s/%s, daemon has %+v", n.DockerID, n.DockerName, d)
			}
		})
	}
}

func TestRemoveWithoutDockerDaemon(t *testing.T) {
	m, _ := dockerNetManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachDocker(ctx, "lab", "web", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(ctx, "lab", "web"); err != nil {
		t.Fatal(err)
	}
	// The daemon's socket is gone (Docker uninstalled): rm still works.
	m.Docker = dockerapi.NewAt(filepath.Join(t.TempDir(), "missing.sock"))
	if _, err := m.Remove(ctx, "lab", false, nil); err != nil {
		t.Fatalf("rm without a docker daemon: %v", err)
	}
	// A network that never had a Docker side never asks the daemon.
	if _, err := m.Create(ctx, CreateOptions{Name: "plain"}); err != nil {
		t.Fatal(err)
	}
	m.Docker = dockerapi.NewAt("/nonexistent/dir/docker.sock")
	if _, err := m.Remove(ctx, "plain", false, nil); err != nil {
		t.Fatal(err)
	}
}

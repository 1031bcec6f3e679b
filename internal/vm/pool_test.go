package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/template"
)

func TestValidatePoolName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true}, {"web-pool-1", true}, {"", false},
		{"Web", false}, {"-a", false}, {"a_b", false},
		{"abcdefghijabcdefghijabcdefghijabcdefghij", true},   // 40
		{"abcdefghijabcdefghijabcdefghijabcdefghijk", false}, // 41: no room for "-<8 hex>"
	}
	for _, tt := range tests {
		if err := ValidatePoolName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidatePoolName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestMemberName(t *testing.T) {
	n, err := memberName("web")
	if err != nil || !isMemberName("web", n) || store.ValidateName(n) != nil {
		t.Fatalf("memberName = %q, %v", n, err)
	}
	tests := []struct {
		pool, dir string
		want      bool
	}{
		{"web", "web-0123abcd", true},
		{"web", "web-0123abc", false},
		{"web", "web-0123abcdz", false},
		{"web", "web-x123abcd", false},
		{"a", "a-b-0123abcd", false}, // pool "a-b"'s member, not "a"'s
		{"a-b", "a-b-0123abcd", true},
		{"web", "other-0123abcd", false},
	}
	for _, tt := range tests {
		if got := isMemberName(tt.pool, tt.dir); got != tt.want {
			t.Errorf("isMemberName(%q, %q) = %v, want %v", tt.pool, tt.dir, got, tt.want)
		}
	}
}

func TestPoolConflicts(t *testing.T) {
	tests := []struct {
		o    UpOptions
		want []string
	}{
		{UpOptions{Template: "t", Name: "x", Backend: "qemu"}, nil},
		{UpOptions{Template: "t", CPUs: 2}, []string{"--cpus"}},
		{UpOptions{Template: "t", MemoryMiB: 256, Network: "user"}, []string{"--memory", "--network"}},
		{UpOptions{Pool: "p", Publish: []string{"80:80"}, ConfigFile: "c.toml"}, []string{"--publish", "--config"}},
		{UpOptions{Pool: "p", Image: "http", FromSnapshot: "s"}, []string{"--image", "--from-snapshot"}},
	}
	for _, tt := range tests {
		if got := poolConflicts(tt.o); !slices.Equal(got, tt.want) {
			t.Errorf("poolConflicts(%+v) = %v, want %v", tt.o, got, tt.want)
		}
	}
}

// A pool's members are the member store's records of that pool: not a
// handed-out directory (its record names the user's VM), not another
// pool's, but an interrupted create's recordless directory is.
func TestPoolMembers(t *testing.T) {
	root := t.TempDir()
	m := New(paths.Dirs{State: root, Config: filepath.Join(root, "c"), Share: filepath.Join(root, "sh"), Cache: filepath.Join(root, "ca")}, &config.Config{}, nil)
	pm := m.poolVMs()
	now := time.Now().UTC()
	for i, r := range []*store.Record{
		{Name: "web-00000001", State: "creating", Pool: "web"},
		{Name: "web-00000002", State: "creating", Pool: "web"},
		{Name: "web-b-00000003", State: "creating", Pool: "web-b"},
		{Name: "web-00000004", State: "creating", Pool: "web"},
	} {
		r.Created = now.Add(time.Duration(i) * time.Second)
		if err := pm.Store.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	// 00000004 is handed out: the user's record now lives in its directory.
	if err := m.Store.Adopt(&store.Record{Name: "mine", State: "running", FromPool: "web"}, pm.Store.Dir("web-00000004")); err != nil {
		t.Fatal(err)
	}
	// An interrupted create: a directory and no record.
	if err := os.Mkdir(pm.Store.Dir("web-00000005"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := m.poolMembers("web")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
	}
	want := []string{"web-00000005", "web-00000001", "web-00000002"} // oldest first; no record is oldest
	if !slices.Equal(names, want) {
		t.Fatalf("members of web = %v, want %v", names, want)
	}
	// Nobody makes them: they are a dead refiller's leftovers; one whose
	// make lock is held is being made.
	unlock, err := lockFile(m.makeLockPath("web-00000002"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx := context.Background()
	for _, r := range got {
		want := "failed"
		if r.Name == "web-00000002" {
			want = "warming"
		}
		if st := m.memberState(ctx, pm, r); st != want {
			t.Errorf("memberState(%s) = %s, want %s", r.Name, st, want)
		}
	}
	// The user's VM lists through its name, not as a member.
	recs, err := m.Store.List()
	if err != nil || len(recs) != 1 || recs[0].Name != "mine" || recs[0].Dir != pm.Store.Dir("web-00000004") {
		t.Fatalf("user VMs: %+v %v", recs, err)
	}
}

func TestPoolCreateValidates(t *testing.T) {
	root := t.TempDir()
	m := New(paths.Dirs{State: root, Config: filepath.Join(root, "c"), Share: filepath.Join(root, "sh"), Cache: filepath.Join(root, "ca")}, &config.Config{}, nil)
	ctx := context.Background()
	pub := &template.Template{Name: "pub", Image: "minimal", Defaults: template.Defaults{Publish: []string{"127.0.0.1:8080:80/tcp"}}}
	if err := m.Templates().Put(pub); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		o    PoolCreateOptions
		want string
	}{
		{PoolCreateOptions{Name: "p", Template: "pub", Size: 2}, "publishes ports"},
		{PoolCreateOptions{Name: "p", Template: "nope", Size: 2}, "nope"},
		{PoolCreateOptions{Name: "p", Size: 1}, "exactly one of"},
		{PoolCreateOptions{Name: "p", Template: "t", Snapshot: "s", Size: 1}, "exactly one of"},
		{PoolCreateOptions{Name: "p", Template: "t", Size: 0}, "--size 0"},
		{PoolCreateOptions{Name: "p", Template: "t", Size: 65}, "--size 65"},
		{PoolCreateOptions{Name: "p", Template: "t", Size: 1, Keep: "frozen"}, "--keep"},
		{PoolCreateOptions{Name: "P", Template: "t", Size: 1}, "pool name"},
		{PoolCreateOptions{Name: "p", Snapshot: "nope", Size: 1}, "no such snapshot"},
	}
	for _, tt := range tests {
		_, err := m.PoolCreate(ctx, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("PoolCreate(%+v) = %v, want an error with %q", tt.o, err, tt.want)
		}
	}
	if _, err := os.Stat(m.poolsDir()); err == nil {
		if ents, _ := os.ReadDir(m.poolsDir()); len(ents) > 0 {
			t.Errorf("a refused create left %v", ents)
		}
	}
}

// retireMember leaves a handed-out member alone and makes a ready one
// unreachable for hand-outs before it is removed.
func TestRetireMember(t *testing.T) {
	root := t.TempDir()
	m := New(paths.Dirs{State: root, Config: filepath.Join(root, "c"), Share: filepath.Join(root, "sh"), Cache: filepath.Join(root, "ca")}, &config.Config{}, nil)
	pm := m.poolVMs()
	for _, n := range []string{"web-00000001", "web-00000002"} {
		if err := pm.Store.Create(&store.Record{Name: n, State: "running", Pool: "web", PoolReady: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Store.Adopt(&store.Record{Name: "mine", State: "running", FromPool: "web"}, pm.Store.Dir("web-00000002")); err != nil {
		t.Fatal(err)
	}
	if err := retireMember(pm, "web-00000001"); err != nil {
		t.Fatal(err)
	}
	if r, _ := pm.Store.Get("web-00000001"); r.PoolReady {
		t.Fatalf("retired member still ready: %+v", r)
	}
	if err := retireMember(pm, "web-00000002"); !errors.Is(err, errMemberTaken) {
		t.Fatalf("retire of a handed-out member: %v", err)
	}
	if r, _ := m.Store.Get("mine"); r.Name != "mine" || r.FromPool != "web" {
		t.Fatalf("handed-out VM changed: %+v", r)
	}
	if err := retireMember(pm, "web-00000009"); err != nil {
		t.Fatalf("retire of a gone member: %v", err)
	}
}

package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"web-1", true}, {long, true}, {"0", true},
		{"", false}, {long + "a", false}, {"-a", false}, {"a-", false}, {"A", false},
		{"a_b", false}, {"a.b", false}, {"../x", false}, {"a b", false},
	}
	for _, tt := range tests {
		if err := ValidateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestCreateGetListRemove(t *testing.T) {
	s := New(t.TempDir())
	if err := s.Create(&Record{Name: "one", State: "creating", Backend: "qemu", CPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Record{Name: "one"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	r, err := s.Get("one")
	if err != nil || r.Backend != "qemu" || r.Dir != s.Dir("one") {
		t.Fatalf("get: %+v %v", r, err)
	}
	r.State = "running"
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	// A directory with no record (crash after mkdir) is listed as failed.
	os.Mkdir(s.Dir("two"), 0o700)
	l, err := s.List()
	if err != nil || len(l) != 2 || l[0].State != "running" || l[1].State != "failed" {
		t.Fatalf("list: %+v %v", l, err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := s.Remove("one"); err != nil {
		t.Fatal(err)
	}
	if s.Exists("one") {
		t.Fatal("still exists")
	}
	// No temp files left behind by atomic writes.
	m, _ := filepath.Glob(filepath.Join(s.dir, "*", ".*tmp*"))
	if len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}
}

func TestConcurrentCreateOneWinner(t *testing.T) {
	s := New(t.TempDir())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Create(&Record{Name: "same"}) == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d winners", wins)
	}
}

func TestRandomNameAvoidsTaken(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		n := RandomName(func(s string) bool { return seen[s] })
		if err := ValidateName(n); err != nil {
			t.Fatal(err)
		}
		if seen[n] {
			t.Fatalf("duplicate %s", n)
		}
		seen[n] = true
	}
}

// TestAdopt: a name adopted onto another store's directory reads, lists,
// and removes through its link, and removal takes the directory too.
func TestAdopt(t *testing.T) {
	root := t.TempDir()
	users, pool := New(root), New(filepath.Join(root, ".pool"))
	if err := pool.Create(&Record{Name: "p-1", State: "running", Pool: "web", PoolReady: true}); err != nil {
		t.Fatal(err)
	}
	target := pool.Dir("p-1")
	if err := users.Adopt(&Record{Name: "mine", State: "running", FromPool: "web"}, target); err != nil {
		t.Fatal(err)
	}
	if err := users.Adopt(&Record{Name: "mine"}, target); !errors.Is(err, ErrExists) {
		t.Fatalf("second adopt: %v", err)
	}
	r, err := users.Get("mine")
	if err != nil || r.Dir != target || r.FromPool != "web" || r.Pool != "" {
		t.Fatalf("get adopted: %+v %v", r, err)
	}
	// The pool sees its member's directory now carries the user's record.
	if r, err := pool.Get("p-1"); err != nil || r.Name != "mine" {
		t.Fatalf("pool view: %+v %v", r, err)
	}
	recs, err := users.List()
	if err != nil || len(recs) != 1 || recs[0].Name != "mine" {
		t.Fatalf("list: %+v %v", recs, err)
	}
	if err := users.Remove("mine"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{target, users.Dir("mine")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after remove: %v", p, err)
		}
	}
	// A link whose directory is gone is reported and removable.
	if err := pool.Create(&Record{Name: "p-2"}); err != nil {
		t.Fatal(err)
	}
	if err := users.Adopt(&Record{Name: "gone"}, pool.Dir("p-2")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(pool.Dir("p-2"))
	if r, err := users.Get("gone"); err != nil || r.State != "failed" || !users.Exists("gone") {
		t.Fatalf("dangling: %+v %v", r, err)
	}
	if err := users.Remove("gone"); err != nil || users.Exists("gone") {
		t.Fatalf("remove dangling: %v", err)
	}
}

package template

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func valid() *Template {
	return &Template{Version: 1, Name: "web", Image: "minimal", Defaults: Defaults{CPUs: 2, MemoryMiB: 512, Network: "lab", Secrets: []string{"tok"}, Publish: []string{"8080:80"}}}
}

func TestDecode(t *testing.T) {
	good, _ := json.Marshal(valid())
	for _, c := range []struct {
		name string
		in   string
		want string // error substring; "" = accepted
	}{
		{"valid", string(good), ""},
		{"unknown field", strings.Replace(string(good), `"name"`, `"evil":1,"name"`, 1), "unknown field"},
		{"trailing data", string(good) + "{}", "trailing"},
		{"future version", strings.Replace(string(good), `"version":1`, `"version":9`, 1), "version 9"},
		{"bad name", strings.Replace(string(good), `"name":"web"`, `"name":"../x"`, 1), "template name"},
		{"no image", strings.Replace(string(good), `"image":"minimal"`, `"image":""`, 1), "no image"},
		{"newline in image", strings.Replace(string(good), `"image":"minimal"`, `"image":"a\nb"`, 1), "not a catalog"},
		{"cpus out of range", strings.Replace(string(good), `"cpus":2`, `"cpus":9999`, 1), "cpus"},
		{"slash in network", strings.Replace(string(good), `"network":"lab"`, `"network":"../lab"`, 1), "invalid value"},
		{"bad secret name", strings.Replace(string(good), `"tok"`, `"T OK"`, 1), "secret name"},
		{"incomplete snapshot", strings.Replace(string(good), `"created"`, `"snapshot":{"backend":"","cpus":0,"memory_mib":0,"created":"2026-01-01T00:00:00Z"},"created"`, 1), "incomplete"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.in))
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestStore(t *testing.T) {
	s := NewStore(filepath.Join(t.TempDir(), "templates"))
	if _, err := s.Get("web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing template: %v", err)
	}
	tp := valid()
	if err := s.Put(tp); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("web")
	if err != nil || got.Defaults.CPUs != 2 || got.Dir != s.Dir("web") || got.Created.IsZero() {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// A record whose name differs from its directory is refused.
	b, _ := os.ReadFile(filepath.Join(s.Dir("web"), RecordFile))
	os.MkdirAll(s.Dir("other"), 0o700)
	os.WriteFile(filepath.Join(s.Dir("other"), RecordFile), b, 0o600)
	if _, err := s.Get("other"); err == nil {
		t.Fatal("a record under another name was accepted")
	}
	ts, errs := s.List()
	if len(ts) != 1 || len(errs) != 1 {
		t.Fatalf("List = %d templates, %v", len(ts), errs)
	}
	if err := s.Remove("web"); err != nil || s.Exists("web") {
		t.Fatalf("Remove: %v", err)
	}
	if err := s.Remove("web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestInitAndLoadSpec(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proj")
	files, err := Init(dir, "web")
	if err != nil || len(files) != 2 {
		t.Fatalf("Init = %v, %v", files, err)
	}
	if _, err := Init(dir, "web"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Init: %v", err)
	}
	s, err := LoadSpec(dir)
	if err != nil || s.Name != "web" || s.Image != filepath.Join(dir, "recipe.toml") || s.Defaults.MemoryMiB != 256 {
		t.Fatalf("LoadSpec = %+v, %v", s, err)
	}
	os.WriteFile(filepath.Join(dir, SpecFile), []byte("name = \"web\"\nimage = \"minimal\"\nbogus = 1\n"), 0o644)
	if _, err := LoadSpec(dir); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown key: %v", err)
	}
}

// FuzzDecode: a template record comes from registries; no input may panic,
// and what is accepted re-encodes to something accepted again.
func FuzzDecode(f *testing.F) {
	good, _ := json.Marshal(valid())
	f.Add(good)
	f.Add([]byte(`{"version":1,"name":"a","image":"x","defaults":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tp, err := Decode(b)
		if err != nil {
			return
		}
		again, _ := json.Marshal(tp)
		if _, err := Decode(again); err != nil {
			t.Fatalf("accepted %q but not its re-encoding: %v", b, err)
		}
	})
}

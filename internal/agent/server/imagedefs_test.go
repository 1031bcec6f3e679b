package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

func TestHealthChecksAndServices(t *testing.T) {
	needSh(t)
	stages := server.NewStages(proto.StageServices, proto.StageHealth)
	ln, d := tcpTransport(t)
	keys := newTestKeys(t)
	s := server.New(server.Config{Stages: stages, Wrap: keys.serverWrap})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = s.Serve(ctx, ln) }()

	dir := t.TempDir()
	flag := filepath.Join(dir, "flag")
	s.RunServices(ctx, []server.ServiceSpec{
		{Name: "sleeper", Command: []string{"sleep", "60"}},
		{Name: "flaky", Command: []string{"sh", "-c", "touch " + flag + "; exit 1"}},
	})
	s.RunChecks(ctx, []server.CheckSpec{
		{Name: "ok", Command: []string{"sh", "-c", "echo fine"}},
		{Name: "fails", Command: []string{"sh", "-c", "echo broken >&2; exit 2"}},
		{Name: "slow", Command: []string{"sleep", "10"}, TimeoutMS: 200},
		{Name: "chatty", Command: []string{"sh", "-c", "head -c 1000000 /dev/zero"}},
	})
	cl := client.New(d, client.WithWrap(keys.clientWrap))
	waitFor(t, "check results and a restart", func() bool {
		h, err := cl.HealthWith(testCtx(t), proto.HealthRequest{})
		if err != nil || len(h.Checks) != 4 || len(h.Services) != 2 {
			return false
		}
		return h.Checks[2].Ran && h.Services[1].Restarts > 0
	})
	h, err := cl.HealthWith(testCtx(t), proto.HealthRequest{RunChecks: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		ok     bool
		detail string
	}{"ok": {true, "fine"}, "fails": {false, "exit 2: broken"}, "slow": {false, "timed out after 200ms"}, "chatty": {true, ""}}
	for _, r := range h.Checks {
		w := want[r.Name]
		if r.OK != w.ok || !strings.Contains(r.Detail, w.detail) || !r.Ran {
			t.Errorf("check %s: %+v, want ok=%v detail containing %q", r.Name, r, w.ok, w.detail)
		}
	}
	if !h.Services[0].Running || h.Services[0].Pid == 0 || h.Services[1].Restarts == 0 {
		t.Errorf("services %+v", h.Services)
	}
	if _, err := os.Stat(flag); err != nil {
		t.Error("flaky service never ran")
	}
	if h.Ready {
		t.Error("ready with failing checks and a crashing service")
	}
	for _, st := range h.Stages {
		if st.Done {
			t.Errorf("stage %s done: %s", st.Name, st.Detail)
		}
	}
}

func TestLoadSpecs(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "b.json"), []byte(`{"name":"b","command":["/bin/b"],"user":"www"}`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "a.json"), []byte(`{"name":"a","command":["/bin/a","-x"]}`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "README"), []byte(`not json`), 0o644))
	svcs, err := server.LoadServices(dir)
	if err != nil || len(svcs) != 2 || svcs[0].Name != "a" || svcs[1].User != "www" {
		t.Fatalf("%+v %v", svcs, err)
	}
	if s, err := server.LoadServices(filepath.Join(dir, "absent")); err != nil || len(s) != 0 {
		t.Fatalf("absent dir: %v %v", s, err)
	}
	for _, bad := range []string{`{"name":"x"}`, `{"name":"","command":["a"]}`, `{"name":"x","command":["a"],"extra":1}`, `{"name":"a/b","command":["a"]}`, ``} {
		if _, err := server.ParseService([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := server.ParseCheck([]byte(`{"name":"x","command":["a"],"timeout_ms":-1}`)); err == nil {
		t.Error("accepted a negative timeout")
	}
}

func FuzzParseSpecs(f *testing.F) {
	f.Add([]byte(`{"name":"http","command":["/bin/wget","-q","http://127.0.0.1/"],"interval_ms":5000,"timeout_ms":2000}`))
	f.Add([]byte(`{"name":"httpd","command":["/bin/httpd","-f"],"user":"root"}`))
	f.Add([]byte(`{"name":"x","command":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := server.ParseService(b); err == nil && (s.Name == "" || len(s.Command) == 0) {
			t.Fatalf("accepted invalid service %+v", s)
		}
		if c, err := server.ParseCheck(b); err == nil && (c.Name == "" || len(c.Command) == 0 || c.TimeoutMS < 0) {
			t.Fatalf("accepted invalid check %+v", c)
		}
	})
}

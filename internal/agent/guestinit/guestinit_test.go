package guestinit

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestParseEndpoint(t *testing.T) {
	cases := []struct {
		in   string
		want Endpoint
		bad  bool
	}{
		{in: "unix:/run/mvm/agent.sock", want: Endpoint{Kind: "unix", Addr: "/run/mvm/agent.sock"}},
		{in: "tcp:127.0.0.1:5252", want: Endpoint{Kind: "tcp", Addr: "127.0.0.1:5252"}},
		{in: "vsock:5252", want: Endpoint{Kind: "vsock", Port: 5252}},
		{in: "serial:org.mvm.agent.0", want: Endpoint{Kind: "serial", Addr: "org.mvm.agent.0"}},
		{in: "unix:relative.sock", bad: true},
		{in: "tcp:nohost", bad: true},
		{in: "vsock:0", bad: true},
		{in: "vsock:-1", bad: true},
		{in: "serial:", bad: true},
		{in: "http:x", bad: true},
		{in: "nonsense", bad: true},
	}
	for _, tc := range cases {
		got, err := ParseEndpoint(tc.in)
		if tc.bad != (err != nil) || (!tc.bad && got != tc.want) {
			t.Errorf("%q: got %+v, %v", tc.in, got, err)
		}
	}
}

func TestEndpointFromConfig(t *testing.T) {
	cases := []struct {
		in   guestcfg.Transport
		want string
	}{
		{guestcfg.Transport{Kind: guestcfg.TransportSerial}, "serial:" + guestcfg.SerialPortName},
		{guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: "p"}, "serial:p"},
		{guestcfg.Transport{Kind: guestcfg.TransportVsock}, "vsock:5252"},
		{guestcfg.Transport{Kind: guestcfg.TransportVsock, VsockPort: 9}, "vsock:9"},
		{guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: "/s"}, "unix:/s"},
	}
	for _, tc := range cases {
		if got := EndpointFromConfig(tc.in).String(); got != tc.want {
			t.Errorf("%+v: got %s want %s", tc.in, got, tc.want)
		}
	}
}

func TestFindVirtioPort(t *testing.T) {
	dir := t.TempDir()
	for name, port := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": "org.mvm.agent.0"} {
		_ = os.MkdirAll(filepath.Join(dir, name), 0o755)
		_ = os.WriteFile(filepath.Join(dir, name, "name"), []byte(port+"\n"), 0o644)
	}
	if got, err := findVirtioPort(dir, "org.mvm.agent.0"); err != nil || got != "/dev/vport1p1" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := findVirtioPort(dir, "absent"); err == nil {
		t.Fatal("found an absent port")
	}
}

func TestRemoveSameDevKeepsNewRoot(t *testing.T) {
	root := t.TempDir()
	keep := filepath.Join(root, "newroot")
	for _, d := range []string{"a/b/c", "newroot/etc", "dev"} {
		_ = os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	_ = os.WriteFile(filepath.Join(root, "init"), []byte("x"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "a/b/c/mod.ko"), []byte("x"), 0o644)
	_ = os.WriteFile(filepath.Join(keep, "etc/important"), []byte("x"), 0o644)
	_ = os.Symlink("/newroot/etc/important", filepath.Join(root, "link"))
	var st os.FileInfo
	st, _ = os.Lstat(root)
	dev := devOf(t, st)
	if err := removeSameDev(root, dev, keep); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 || ents[0].Name() != "newroot" {
		t.Fatalf("left %v", ents)
	}
	if _, err := os.Stat(filepath.Join(keep, "etc/important")); err != nil {
		t.Fatal("deleted inside the kept directory (or followed the symlink)")
	}
}

func TestMarkUnsupportedAndImageEnv(t *testing.T) {
	dir := t.TempDir()
	s := server.NewStages(proto.StageServices, proto.StageHealth)
	markUnsupported(s, proto.StageServices, filepath.Join(dir, "absent"), "services")
	_ = os.WriteFile(filepath.Join(dir, "web.json"), []byte("{}"), 0o644)
	markUnsupported(s, proto.StageHealth, dir, "health checks")
	got := s.Snapshot()
	if !got[0].Done || got[1].Done || !strings.Contains(got[1].Detail, "1 health checks defined") {
		t.Fatalf("stages %+v", got)
	}
	img := filepath.Join(dir, "image.json")
	_ = os.WriteFile(img, []byte(`{"name":"x","env":["A=1","B=2"],"future":true}`), 0o644)
	env, err := imageEnv(img)
	if err != nil || !slices.Equal(env, []string{"A=1", "B=2"}) {
		t.Fatalf("env %q, %v", env, err)
	}
	if env, err := imageEnv(filepath.Join(dir, "none.json")); err != nil || env != nil {
		t.Fatalf("missing image.json: %q, %v", env, err)
	}
}

func TestConsoleLines(t *testing.T) {
	var b bytes.Buffer
	c := NewConsole(&b)
	c.Printf("loaded %d modules\n", 3)
	c.Logger(0).Info("host connected", "port", "p")
	want := "mvm-agent: loaded 3 modules\nmvm-agent: host connected port=p\n"
	if b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}

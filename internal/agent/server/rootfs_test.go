package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

// A rootfs directory is chrooted into: the program is found on the
// request's PATH inside it (through a symlink that only resolves there),
// cwd and the passwd file are its own.
func TestExecRootfsDir(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs a static busybox on PATH")
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "work"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("app:x:1234:4321:app:/work:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("app:x:4321:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "marker"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	forEachTransport(t, server.Config{}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		req := proto.ExecRequest{
			Argv: []string{"sh", "-c", `/bin/busybox cat /marker; pwd; /bin/busybox id -u; /bin/busybox id -g; exit 3`},
			Env:  []string{"PATH=/bin"}, Cwd: "/work", User: "app", Rootfs: root,
		}
		out, errs, exit := run(t, c, req, nil)
		if out != "inside\n/work\n1234\n4321\n" || exit.Code != 3 {
			t.Fatalf("stdout %q stderr %q exit %+v", out, errs, exit)
		}
		for _, bad := range []string{"relative", "/", "LABEL=", "LABEL=bad/label", root + "/marker"} {
			var ex proto.ExecRequest = req
			ex.Rootfs = bad
			if _, err := c.Exec(testCtx(t), ex, nil, &discard{}, &discard{}); err == nil {
				t.Errorf("rootfs %q: no error", bad)
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

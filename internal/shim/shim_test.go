//go:build linux

package shim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
)

const validSpec = `{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":1000,"gid":100},
"args":["sh","-c","echo hi"],"env":["PATH=/bin","A=b=c"],"cwd":"/work"},"root":{"path":"rootfs","readonly":true},"hostname":"c1"}`

func TestParseSpec(t *testing.T) {
	s, err := parseSpec([]byte(validSpec))
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if strings.Join(p.Args, " ") != "sh -c echo hi" || p.Cwd != "/work" || p.user() != "1000:100" || len(p.Env) != 2 ||
		s.Root.Path != "rootfs" || !s.Root.Readonly {
		t.Fatalf("parsed %+v %+v", s, p)
	}
	for name, bad := range map[string]string{
		"not json":     `{`,
		"no process":   `{"root":{"path":"rootfs"}}`,
		"no args":      `{"process":{"args":[],"cwd":"/"}}`,
		"empty arg0":   `{"process":{"args":[""],"cwd":"/"}}`,
		"relative cwd": `{"process":{"args":["sh"],"cwd":"work"}}`,
		"bad env":      `{"process":{"args":["sh"],"env":["NOEQUALS"]}}`,
		"uid overflow": `{"process":{"args":["sh"],"user":{"uid":4294967296}}}`,
	} {
		if _, err := parseSpec([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := parseProcess([]byte(`{"args":["cat"],"cwd":"/"}`)); err != nil {
		t.Errorf("exec process: %v", err)
	}
	if _, err := parseProcess(make([]byte, maxSpecBytes+1)); err == nil {
		t.Error("oversized process spec accepted")
	}
}

func TestLoadSpecLimit(t *testing.T) {
	dir := t.TempDir()
	big := `{"process":{"args":["sh"]},"pad":"` + strings.Repeat("x", maxSpecBytes) + `"}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSpec(dir); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("oversized config.json: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(validSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSpec(dir); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseSpec: config.json and an exec's process spec come from
// containerd's clients.
func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(validSpec))
	f.Add([]byte(`{"args":["sh"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := parseSpec(b); err == nil {
			if len(s.Process.Args) == 0 || s.Process.Args[0] == "" {
				t.Fatal("spec without a program accepted")
			}
		}
		if p, err := parseProcess(b); err == nil && (p.Cwd != "" && !filepath.IsAbs(p.Cwd)) {
			t.Fatalf("relative cwd %q accepted", p.Cwd)
		}
	})
}

func TestParseMountOptions(t *testing.T) {
	flags, data := parseMountOptions([]string{"rbind", "ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rw"})
	if flags != unix.MS_BIND|unix.MS_REC|unix.MS_NOSUID || data != "lowerdir=/a:/b,upperdir=/u" {
		t.Fatalf("flags %#x data %q", flags, data)
	}
}

func TestVMName(t *testing.T) {
	a, b := VMName("default", "web"), VMName("k8s.io", "web")
	if a == b || len(a) != 16 || a != VMName("default", "web") || !strings.HasPrefix(a, "ctr-") {
		t.Fatalf("VMName: %q %q", a, b)
	}
}

// Closing a stdin whose writer never came releases the open waiting for
// it, so Delete cannot hang on a client that went away.
func TestStdinFIFOClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdin")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	in := &stdinFIFO{path: path}
	done := make(chan error, 1)
	go func() {
		_, err := in.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	in.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after close: no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}

	// With a writer: data, then EOF when it closes.
	in = &stdinFIFO{path: path}
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		w.Write([]byte("data"))
		w.Close()
	}()
	b, err := io.ReadAll(in)
	if err != nil || !bytes.Equal(b, []byte("data")) {
		t.Fatalf("read %q %v", b, err)
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"start"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-namespace and -id") {
		t.Fatalf("no flags: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := Main([]string{"-namespace", "n", "-id", "x", "bogus"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unknown action") {
		t.Fatalf("bogus action: exit %d, %q", code, errb.String())
	}
}

// A native-snapshotter rootfs is a bind mount; read-only needs the remount.
func TestMountAllBind(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (mount)")
	}
	src, target := t.TempDir(), filepath.Join(t.TempDir(), "rootfs")
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms := []*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}
	if err := mountAll(ms, target); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(target)
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644); err == nil {
		t.Fatal("write to a read-only mount succeeded")
	}
	if err := unmountAll(target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(target, "f")); err == nil {
		t.Fatal("still mounted after unmountAll")
	}
	if err := unmountAll(target); err != nil {
		t.Fatalf("unmount of nothing: %v", err)
	}
}

// What the process writes before containerd's reader has opened its end
// reaches the reader (the shim's writer waits for it), and closing the
// writer is the reader's EOF.
func TestOutputWaitsForReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	w := openOutput(path)
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write([]byte("early\n"))
		if err == nil {
			err = w.Close()
		}
		wrote <- err
	}()
	time.Sleep(100 * time.Millisecond) // writer first, as under a loaded containerd
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "early\n" {
		t.Fatalf("read %q %v", b, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// Without a reader the writer gives up after the timeout: output is
// discarded, nothing hangs, no open stays pending.
func TestOutputWithoutReader(t *testing.T) {
	old := outputOpenTimeout
	outputOpenTimeout = 100 * time.Millisecond
	t.Cleanup(func() { outputOpenTimeout = old })
	path := filepath.Join(t.TempDir(), "stdout")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	w := openOutput(path)
	done := make(chan error, 1)
	go func() {
		n, err := w.Write([]byte("lost"))
		if err == nil && n != 4 {
			err = fmt.Errorf("wrote %d", n)
		}
		if err == nil {
			err = w.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("write without a reader hung")
	}
	if w.(*fifoWriter).f != nil {
		t.Fatal("the FIFO stayed open")
	}
}

// sdkuser is a program outside the mvm module that drives a VM through
// pkg/mvm, the way an embedding user would. It prints one line per check
// and exits non-zero on the first that fails.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/pkg/mvm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sdkuser:", err)
		os.Exit(1)
	}
	fmt.Println("sdk: all checks passed")
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, err := mvm.New(mvm.Options{BinDir: os.Getenv("SDK_BIN")})
	if err != nil {
		return err
	}
	v, err := c.Up(ctx, mvm.UpOptions{Name: "sdk-vm", Backend: "qemu", Network: "none", MemoryMiB: 256})
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	defer c.Remove(context.Background(), v.Name, true)
	if v.State != "running" || v.Backend != "qemu" {
		return fmt.Errorf("up gave %+v", v)
	}
	fmt.Println("sdk: up", v.Name, v.State)

	out, err := c.Output(ctx, v.Name, "uname", "-s")
	if err != nil || strings.TrimSpace(string(out)) != "Linux" {
		return fmt.Errorf("output uname: %q, %v", out, err)
	}
	var so, se bytes.Buffer
	st, err := c.Run(ctx, v.Name, mvm.Cmd{Args: []string{"sh", "-c", "read x; echo out:$x; echo err >&2; exit 3"},
		Stdin: strings.NewReader("in\n"), Stdout: &so, Stderr: &se})
	if err != nil || st.Code != 3 || so.String() != "out:in\n" || se.String() != "err\n" {
		return fmt.Errorf("run: %+v %v stdout %q stderr %q", st, err, so.String(), se.String())
	}
	var ee *mvm.ExitError
	if _, err := c.Output(ctx, v.Name, "false"); !errors.As(err, &ee) || ee.Code != 1 {
		return fmt.Errorf("output of false: %v", err)
	}
	fmt.Println("sdk: exec streams and statuses")

	p, err := c.StartCmd(ctx, v.Name, mvm.Cmd{Args: []string{"sleep", "300"}})
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if st, err := p.Wait(); err != nil || st.Signal != "TERM" {
		return fmt.Errorf("signalled sleep: %+v %v", st, err)
	}
	fmt.Println("sdk: signal")

	dir, err := os.MkdirTemp("", "sdkuser")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(src, []byte("through the agent\n"), 0o644); err != nil {
		return err
	}
	if err := c.CopyTo(ctx, v.Name, src, "/tmp/in.txt"); err != nil {
		return err
	}
	if err := c.CopyFrom(ctx, v.Name, "/tmp/in.txt", filepath.Join(dir, "back.txt")); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "back.txt")); err != nil || string(b) != "through the agent\n" {
		return fmt.Errorf("copy round trip: %q %v", b, err)
	}
	fmt.Println("sdk: copy")

	// A guest HTTP listener, reached through Forward.
	if _, err := c.Output(ctx, v.Name, "sh", "-c", "mkdir -p /tmp/w && echo hello-forward > /tmp/w/index.html && httpd -p 127.0.0.1:8088 -h /tmp/w"); err != nil {
		return fmt.Errorf("guest httpd: %w", err)
	}
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	addr := make(chan net.Addr, 1)
	ferr := make(chan error, 1)
	go func() { ferr <- c.Forward(fctx, v.Name, 0, 8088, func(a net.Addr) { addr <- a }) }()
	var a net.Addr
	select {
	case a = <-addr:
	case err := <-ferr:
		return fmt.Errorf("forward: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("forward: not listening after 30s")
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + a.String() + "/index.html")
	if err != nil {
		return fmt.Errorf("get through forward: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	if err != nil || string(body) != "hello-forward\n" {
		return fmt.Errorf("forward served %q, %v", body, err)
	}
	fcancel()
	fmt.Println("sdk: forward")

	if _, err := c.Stop(ctx, v.Name, 30*time.Second); err != nil {
		return err
	}
	if g, err := c.Get(ctx, v.Name); err != nil || g.State != "stopped" {
		return fmt.Errorf("after stop: %+v %v", g, err)
	}
	if err := c.Remove(ctx, v.Name, false); err != nil {
		return err
	}
	if vs, err := c.List(ctx); err != nil || len(vs) != 0 {
		return fmt.Errorf("after remove: %d VMs, %v", len(vs), err)
	}
	fmt.Println("sdk: stop and remove")
	return nil
}

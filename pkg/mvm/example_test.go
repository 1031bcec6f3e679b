package mvm_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/pkg/mvm"
)

// Boot a VM, run a command in it, remove it.
func Example() {
	ctx := context.Background()
	c, err := mvm.New(mvm.Options{})
	if err != nil {
		log.Fatal(err)
	}
	v, err := c.Up(ctx, mvm.UpOptions{Name: "demo", Backend: "qemu"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Remove(ctx, v.Name, true)
	out, err := c.Output(ctx, v.Name, "uname", "-r")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s runs kernel %s", v.Name, out)
}

// Stream a command's output and read its exit status.
func ExampleClient_Run() {
	ctx := context.Background()
	c, err := mvm.New(mvm.Options{})
	if err != nil {
		log.Fatal(err)
	}
	st, err := c.Run(ctx, "demo", mvm.Cmd{
		Args:   []string{"sh", "-c", "echo building; exit 3"},
		Stdout: os.Stdout, Stderr: os.Stderr,
		Timeout: time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit status", st.Code)
}

// Signal a running command.
func ExampleProcess_Signal() {
	ctx := context.Background()
	c, err := mvm.New(mvm.Options{})
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.StartCmd(ctx, "demo", mvm.Cmd{Args: []string{"sleep", "600"}})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		log.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("killed by SIG" + st.Signal)
}

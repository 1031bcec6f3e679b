// Command mvm-agent is the guest agent. As PID 1 it is the init (first in the
// initramfs, then on the root disk); otherwise `mvm-agent serve` runs it as a
// service. Built static: CGO_ENABLED=0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/mvm-dev/mvm/internal/agent/guestinit"
)

// version is set with -ldflags "-X main.version=...".
var version = ""

func agentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `usage:
  mvm-agent                         as PID 1: guest init (initramfs or root disk)
  mvm-agent serve [--config FILE] [--listen unix:PATH|tcp:ADDR|vsock:PORT|serial:NAME]
  mvm-agent container [--config FILE] [--console FILE] [--owner UID:GID]
                                    as a container's PID 1 (docker backend)
  mvm-agent version
`

func main() {
	// As PID 1 the kernel passes unknown command-line words as arguments, so
	// they are not subcommands; only "serve" and "container" (a container's
	// entrypoint) are.
	if os.Getpid() == 1 && (len(os.Args) < 2 || (os.Args[1] != "serve" && os.Args[1] != "container")) {
		runInit()
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func runInit() {
	c := guestinit.OpenConsole()
	defer func() {
		if r := recover(); r != nil {
			guestinit.Fatal(c, "agent", fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	c.Printf("version %s", agentVersion())
	if guestinit.InInitramfs() {
		if stage, err := guestinit.Initramfs(c); err != nil {
			guestinit.Fatal(c, "initramfs: "+stage, err)
			return
		}
	}
	guestinit.Rootfs(c, agentVersion())
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		if len(args) > 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		fmt.Fprintf(stdout, "mvm-agent %s\n", agentVersion())
		return 0
	case "serve":
		return serve(args[1:], stderr)
	case "container":
		return guestinit.ContainerMain(args[1:], stderr, agentVersion())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mvm-agent: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	configFile := fs.String("config", "", "guest config file (mvm.json)")
	listen := fs.String("listen", "", "unix:PATH, tcp:ADDR, vsock:PORT or serial:NAME (default: the config's transport)")
	debugLog := fs.Bool("debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mvm-agent serve: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	opts := guestinit.ServiceOptions{ConfigFile: *configFile, Version: agentVersion()}
	if *listen != "" {
		ep, err := guestinit.ParseEndpoint(*listen)
		if err != nil {
			fmt.Fprintf(stderr, "mvm-agent serve: %v\n%s", err, usage)
			return 2
		}
		opts.Listen = &ep
	} else if *configFile == "" {
		fmt.Fprintf(stderr, "mvm-agent serve: need --listen or --config\n%s", usage)
		return 2
	}
	level := slog.LevelInfo
	if *debugLog {
		level = slog.LevelDebug
	}
	opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := guestinit.Service(context.Background(), opts); err != nil {
		opts.Log.Error("mvm-agent serve failed", "err", err)
		return 1
	}
	return 0
}

package guestinit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/reaper"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// DefaultContainerSocket is where the agent listens in a container whose
// config cannot be read, so the host can still ask health what went wrong.
const DefaultContainerSocket = "/run/mvm/agent.sock"

// ContainerOptions configures container mode.
type ContainerOptions struct {
	ConfigFile  string // mvm.json on the read-only bind mount
	ConsoleFile string // console lines go here as well as to stdout; optional
	// Owner ("UID:GID") gets the agent socket, mode 0600: the host user that
	// runs mvmctl, while the agent runs as the container's root.
	Owner   string
	Version string
}

// ContainerMain parses `mvm-agent container` flags and runs Container.
func ContainerMain(args []string, stderr io.Writer, version string) int {
	fs := flag.NewFlagSet("container", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := ContainerOptions{Version: version}
	fs.StringVar(&o.ConfigFile, "config", "/mnt/config/"+guestcfg.FileName, "guest config file (mvm.json)")
	fs.StringVar(&o.ConsoleFile, "console", "", "also append console lines to this file")
	fs.StringVar(&o.Owner, "owner", "", "UID:GID that owns the agent socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mvm-agent container: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := Container(o); err != nil {
		fmt.Fprintf(stderr, "mvm-agent: container: %v\n", err)
		return 1
	}
	return 0
}

// Container is the agent as a container's PID 1. The container runtime has
// done what the VM init does (root filesystem, /proc, /dev, hostname,
// network), so this mode only reads the config, serves the host on a unix
// socket, reaps, and on shutdown stops its processes and exits, which ends
// the container. It loads no modules and mounts nothing.
func Container(o ContainerOptions) error {
	var w io.Writer = os.Stdout
	if o.ConsoleFile != "" {
		f, err := os.OpenFile(o.ConsoleFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mvm-agent: console file: %v\n", err)
		} else {
			defer f.Close()
			w = io.MultiWriter(f, os.Stdout)
		}
	}
	c := NewConsole(w)
	c.Printf("version %s (container mode)", o.Version)
	stages := server.NewStages(proto.StageKernel, proto.StageRoot, proto.StageConfig,
		proto.StageNetwork, proto.StageServices, proto.StageHealth)
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	stages.Mark(proto.StageKernel, unix.ByteSliceToString(uts.Release[:])+" (host kernel)")
	stages.Mark(proto.StageRoot, "container")

	r, err := reaper.Default()
	if err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	cfg, err := readConfigFile(o.ConfigFile)
	if err != nil {
		c.Printf("config: %v; serving on %s", err, DefaultContainerSocket)
		stages.Fail(proto.StageConfig, err.Error())
		cfg = &guestcfg.Config{Version: 1, Hostname: "mvm",
			Transport: guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: DefaultContainerSocket}}
	} else {
		stages.Mark(proto.StageConfig, cfg.Name)
		// The file holds the guest's private key. A VM unmounts its config
		// drive; a container cannot unmount its bind mount, so the agent
		// deletes the file (the host mounts the directory writable for this).
		if rerr := os.Remove(o.ConfigFile); rerr != nil && !os.IsNotExist(rerr) {
			c.Printf("remove %s: %v", o.ConfigFile, rerr)
		}
	}
	wrap, err := ServerAuth(cfg)
	if err != nil {
		// Fail closed: the console log says why; nobody gets in.
		c.Printf("authentication: %v; refusing every connection", err)
		why := err
		wrap = func(conn net.Conn) (net.Conn, error) {
			conn.Close()
			return nil, fmt.Errorf("agent has no usable keys: %w", why)
		}
	}
	if cfg.Transport.Kind != guestcfg.TransportUnix || cfg.Transport.UnixPath == "" {
		return fmt.Errorf("container mode needs a unix transport, config has %q", cfg.Transport.Kind)
	}
	// The runtime sets the hostname; set it only if it differs (may lack
	// CAP_SYS_ADMIN, which is fine), and only as PID 1, where the UTS
	// namespace is the container's own.
	if h, _ := os.Hostname(); h != cfg.Hostname && os.Getpid() == 1 {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			c.Printf("sethostname %q: %v", cfg.Hostname, err)
		}
	}
	stages.Mark(proto.StageNetwork, "container runtime")

	ln, err := listenOwned(cfg.Transport.UnixPath, o.Owner)
	if err != nil {
		return err
	}
	// Our own handler for the whole run, not NotifyContext: its cancel also
	// drops the handler, and a SIGTERM (docker stop) arriving while we stop
	// our processes after a host shutdown would then kill us mid-way.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			c.Printf("received %v", s)
			cancel()
		case <-ctx.Done():
		}
	}()
	env, err := imageEnv(ImageFile)
	if err != nil {
		c.Printf("%s: %v", ImageFile, err)
	}
	srv := server.New(server.Config{
		Log:          c.Logger(0),
		Stages:       stages,
		Env:          append(env, cfg.Env...),
		Shutdown:     func(bool) { cancel() },
		Wrap:         wrap,
		Console:      cfg.Policy.Console,
		Reaper:       r,
		AgentVersion: o.Version,
	})
	startImageDefs(ctx, c, srv, stages, ServicesDir, HealthDir)
	c.Printf("ready: serving on unix:%s", cfg.Transport.UnixPath)
	err = srv.Serve(ctx, ln)
	ln.Close()
	_ = os.Remove(cfg.Transport.UnixPath)
	if ctx.Err() == nil && err != nil {
		return fmt.Errorf("serve unix:%s: %w", cfg.Transport.UnixPath, err)
	}
	c.Printf("shutting down")
	stopAll(c, termGrace)
	c.Printf("exiting")
	return nil
}

func readConfigFile(path string) (*guestcfg.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return guestcfg.Decode(f)
}

// listenOwned listens on a unix socket and hands it to owner with mode 0600.
// Without an owner the socket is 0600 root's. Access control is the socket
// mode plus the host directory's 0700; the agent's mutual authentication
// comes on top.
func listenOwned(path, owner string) (net.Listener, error) {
	_ = os.Remove(path) // stale socket from an earlier run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	if owner != "" {
		uid, gid, err := parseOwner(owner)
		if err != nil {
			return fail(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return fail(fmt.Errorf("chown agent socket: %w", err))
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("chmod agent socket: %w", err))
	}
	return ln, nil
}

// parseOwner parses "UID:GID".
func parseOwner(s string) (uid, gid int, err error) {
	us, gs, ok := strings.Cut(s, ":")
	if ok {
		uid, err = strconv.Atoi(us)
		if err == nil {
			gid, err = strconv.Atoi(gs)
		}
	}
	if !ok || err != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("owner %q: want UID:GID", s)
	}
	return uid, gid, nil
}

// stopAll sends SIGTERM to every other process in the container, waits up
// to grace, then SIGKILLs the rest. Exiting as PID 1 would kill them too,
// but without the chance to clean up. Only as PID 1, where kill(-1) means
// "everyone in this container"; anywhere else it would mean the whole user.
func stopAll(c *Console, grace time.Duration) {
	if os.Getpid() != 1 {
		return
	}
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for userProcesses() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := userProcesses(); n > 0 {
		c.Printf("%d processes ignored SIGTERM; killing", n)
		_ = unix.Kill(-1, unix.SIGKILL)
	}
	unix.Sync()
}

package guestinit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/reaper"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Root filesystem paths the agent reads (written by internal/image).
const (
	ConfigMount  = "/mnt/config"
	ImageFile    = "/etc/mvm/image.json"
	ServicesDir  = "/etc/mvm/services.d"
	HealthDir    = "/etc/mvm/health.d"
	configWait   = 10 * time.Second
	imageMaxSize = 1 << 20
)

// Rootfs is PID 1 on the root disk: it prepares the system, then serves the
// host until shutdown. It does not return.
func Rootfs(c *Console, version string) {
	log := c.Logger(0)
	stages := server.NewStages(proto.StageKernel, proto.StageRoot, proto.StageConfig,
		proto.StageNetwork, proto.StageServices, proto.StageHealth)

	for _, m := range append([]mountSpec{mountProc, mountSys, mountDev}, rootfsMounts...) {
		if err := m.mount(); err != nil {
			c.Printf("%v", err) // keep going: a degraded guest the host can inspect beats none
		}
	}
	c.Reopen()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	stages.Mark(proto.StageKernel, unix.ByteSliceToString(uts.Release[:]))
	stages.Mark(proto.StageRoot, mountSource("/"))

	r, err := reaper.Default()
	if err != nil {
		Fatal(c, "start reaper", err)
	}

	cfg, err := loadConfig()
	if err != nil {
		// Without the config the transport is a guess; serve on the default
		// serial port so the host can still read the failure from health.
		c.Printf("config drive: %v; using defaults", err)
		stages.Fail(proto.StageConfig, err.Error())
		cfg = &guestcfg.Config{Version: 1, Hostname: "mvm", Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial}}
	} else {
		stages.Mark(proto.StageConfig, cfg.Name)
	}
	applyConfig(c, cfg)
	keys, err := NewKeys(cfg)
	if err != nil {
		// No keys, no service: the host could not authenticate us, and we
		// would not know whom to trust.
		Fatal(c, "refusing to serve", err)
	}

	networkUp(c, stages, cfg.Network)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	power := func(reboot bool) {
		cancel()
		PowerOff(c, reboot)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	go func() {
		s := <-sigs
		c.Printf("received %v", s)
		power(false)
	}()

	env, err := imageEnv(ImageFile)
	if err != nil {
		c.Printf("%s: %v", ImageFile, err)
	}
	srv := server.New(server.Config{
		Log:          log,
		Stages:       stages,
		Env:          append(env, cfg.Env...),
		Shutdown:     power,
		Reaper:       r,
		AgentVersion: version,
		Wrap:         keys.Wrap,
		Rekey:        keys.Rekey,
		Console:      cfg.Policy.Console,
	})
	startImageDefs(ctx, c, srv, stages, ServicesDir, HealthDir)
	ep := EndpointFromConfig(cfg.Transport)
	c.Printf("ready: serving on %s", ep)
	err = ServeEndpoint(ctx, srv, ep, log)
	if ctx.Err() != nil {
		select {} // PowerOff is running; PID 1 must not exit
	}
	Fatal(c, "serve "+ep.String(), err)
}

// loadConfig finds the config drive and decodes it: read straight off the
// device (raw format), or mounted read-only (ext4, from older hosts).
func loadConfig() (*guestcfg.Config, error) {
	ctx, cancel := context.WithTimeout(context.Background(), configWait)
	defer cancel()
	dev, raw, err := realBlockDirs.waitForConfigDrive(ctx)
	if err != nil {
		return nil, err
	}
	// The drive holds the guest's private key: once read, take it out of
	// reach of unprivileged guest users.
	defer os.Chmod(dev, 0o600)
	if raw {
		f, err := os.Open(dev)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return guestcfg.ReadDrive(f)
	}
	if err := os.MkdirAll(ConfigMount, 0o755); err != nil {
		return nil, err
	}
	if !isMountpoint(ConfigMount) {
		flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		if err := unix.Mount(dev, ConfigMount, "ext4", flags, ""); err != nil {
			return nil, fmt.Errorf("mount %s on %s: %w", dev, ConfigMount, err)
		}
	}
	f, err := os.Open(filepath.Join(ConfigMount, guestcfg.FileName))
	if err != nil {
		return nil, err
	}
	cfg, err := guestcfg.Decode(f)
	f.Close()
	_ = unix.Unmount(ConfigMount, unix.MNT_DETACH)
	return cfg, err
}

// applyConfig sets the hostname and, if the guest clock is behind the host's
// time at config creation, the clock.
func applyConfig(c *Console, cfg *guestcfg.Config) {
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		c.Printf("sethostname %q: %v", cfg.Hostname, err)
	}
	if cfg.HostTimeUnixNano > 0 && time.Now().UnixNano() < cfg.HostTimeUnixNano {
		ts := unix.NsecToTimespec(cfg.HostTimeUnixNano)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			c.Printf("set clock: %v", err)
		}
	}
}

// loopbackUp sets IFF_UP on lo; the kernel then assigns 127.0.0.1/8 itself.
// The NIC, if any, is netcfg's (see networkUp).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// markUnsupported is honest about features this agent version lacks: a stage
// with nothing defined is done; one with definitions stays not-ready.
func markUnsupported(s *server.Stages, stage, dir, what string) {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".json" {
			n++
		}
	}
	if n == 0 {
		s.Mark(stage, "none")
		return
	}
	s.Fail(stage, fmt.Sprintf("%d %s defined, but this agent version does not run %s", n, what, what))
}

// imageEnv reads the image's environment from /etc/mvm/image.json.
func imageEnv(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var img struct {
		Env []string `json:"env"`
	}
	b, err := io.ReadAll(io.LimitReader(f, imageMaxSize))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return img.Env, nil
}

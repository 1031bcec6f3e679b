package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Labels set on every container; `docker ps --filter label=mvm.managed=1`
// lists ours.
const (
	LabelManaged = "mvm.managed"
	LabelVM      = "mvm.vm"
	LabelDir     = "mvm.dir"
)

// createBody is the part of the Engine API's ContainerConfig we set.
type createBody struct {
	Hostname     string              `json:"Hostname"`
	Image        string              `json:"Image"`
	Cmd          []string            `json:"Cmd"`
	Labels       map[string]string   `json:"Labels"`
	StopSignal   string              `json:"StopSignal"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	HostConfig   hostConfig          `json:"HostConfig"`
	// NetworkingConfig names the endpoint on HostConfig.NetworkMode's
	// network (network.go); nil for mode none.
	NetworkingConfig *networkingConfig `json:"NetworkingConfig,omitempty"`
}

type hostConfig struct {
	Binds        []string                 `json:"Binds"`
	NanoCPUs     int64                    `json:"NanoCpus,omitempty"`
	Memory       int64                    `json:"Memory,omitempty"`
	MemorySwap   int64                    `json:"MemorySwap,omitempty"`
	AutoRemove   bool                     `json:"AutoRemove"`
	NetworkMode  string                   `json:"NetworkMode"`
	PortBindings map[string][]portBinding `json:"PortBindings,omitempty"`
	Init         bool                     `json:"Init"`
}

// ContainerName is the container for VM name in dir. The directory's hash
// keeps VMs of the same name in different state roots (tests, users) apart.
func ContainerName(name, dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "mvm-" + name + "-" + hex.EncodeToString(sum[:3])
}

// buildCreate maps a spec to the container's configuration. The agent is
// PID 1 and reaps, so Docker's --init is off. AutoRemove: a container that
// stops is gone at once, so nothing leaks past `down`; the console log
// lives in the VM directory and survives it. The network is none until
// applyNetwork puts the container on one.
// cfgDir is the host directory mounted at GuestConfigDir (newConfigDir).
func buildCreate(spec backend.Spec, image, cfgDir string, uid, gid int) createBody {
	b := createBody{
		Hostname: hostname(spec),
		Image:    image,
		Cmd: []string{
			"--config", GuestConfigDir + "/" + guestcfg.FileName,
			"--console", GuestConsole,
			"--owner", strconv.Itoa(uid) + ":" + strconv.Itoa(gid),
		},
		Labels: map[string]string{
			LabelManaged: "1",
			LabelVM:      spec.Name,
			LabelDir:     spec.Dir,
		},
		StopSignal: "SIGTERM",
		HostConfig: hostConfig{
			Binds: []string{
				filepath.Join(spec.Dir, runDir) + ":" + GuestRunDir,
				// rw: the agent deletes mvm.json (it holds the guest key) once
				// read. A new directory every start: see configdir.go.
				cfgDir + ":" + GuestConfigDir,
			},
			AutoRemove:  true,
			NetworkMode: noNetwork,
		},
	}
	if spec.CPUs > 0 {
		b.HostConfig.NanoCPUs = int64(spec.CPUs) * 1e9
	}
	if spec.MemoryMiB > 0 {
		b.HostConfig.Memory = int64(spec.MemoryMiB) << 20
		b.HostConfig.MemorySwap = b.HostConfig.Memory // no swap, like a VM
	}
	return b
}

func hostname(spec backend.Spec) string {
	if spec.Guest != nil && spec.Guest.Hostname != "" {
		return spec.Guest.Hostname
	}
	return spec.Name
}

// guestConfig is the spec's guest config with the transport this backend
// provides; a spec without one gets a minimal config. It carries no
// network: Docker configures the container's NIC, resolv.conf and hosts,
// and the agent must not touch them.
func guestConfig(spec backend.Spec) *guestcfg.Config {
	var c guestcfg.Config
	if spec.Guest != nil {
		c = *spec.Guest
	} else {
		c = guestcfg.Config{Version: 1, Name: spec.Name, Hostname: spec.Name}
	}
	c.Transport = guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: GuestSocket}
	c.Network = nil
	return &c
}

// Start implements backend.Backend: import the image if needed, lay out the
// VM directory, create and start the container.
func (*Backend) Start(ctx context.Context, spec backend.Spec) (backend.Handle, error) {
	if err := backend.RefuseForeignArch(Name, spec); err != nil {
		return nil, err
	}
	e, err := newEngine()
	if err != nil {
		return nil, err
	}
	return e.start(ctx, spec)
}

func (e *engine) start(ctx context.Context, spec backend.Spec) (*Handle, error) {
	if spec.RootImage == "" {
		return nil, errors.New("docker: spec has no root image")
	}
	if err := e.available(ctx); err != nil {
		return nil, err
	}
	att, err := e.resolveNetwork(ctx, spec)
	if err != nil {
		return nil, err
	}
	ref, err := e.ensureImage(ctx, spec.RootImage, spec.ImageDigest, spec.Dir)
	if err != nil {
		return nil, err
	}
	cfgDir, err := layout(spec)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", spec.Dir, err)
	}
	rec := record{Backend: Name, Container: ContainerName(spec.Name, spec.Dir), Image: ref, Socket: e.sock}
	body := buildCreate(spec, ref, cfgDir, os.Getuid(), os.Getgid())
	applyNetwork(&body, att, spec.Publish)
	if att != nil {
		rec.Network = att.Network
	}
	if err := writeRecord(spec.Dir, rec); err != nil {
		return nil, err
	}
	h := &Handle{dir: spec.Dir, rec: rec, eng: e}
	id, err := e.create(ctx, rec.Container, body)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", rec.Container, err)
	}
	h.rec.ID = id
	if err := writeRecord(spec.Dir, h.rec); err != nil {
		_ = e.remove(context.WithoutCancel(ctx), rec.Container)
		return nil, err
	}
	if err := e.post(ctx, rec.Container, "start", nil); err != nil {
		_ = e.remove(context.WithoutCancel(ctx), rec.Container)
		return nil, fmt.Errorf("start container %s: %w", rec.Container, err)
	}
	if att != nil && att.Internal {
		e.dropDefaultRoute(ctx, rec.Container)
	}
	return h, nil
}

// layout creates run/ (socket, console log) and a new config directory
// holding mvm.json, whose path it returns, and points the spec's serial log
// at the console log so `mvmctl logs` reads it.
func layout(spec backend.Spec) (cfgDir string, err error) {
	run := filepath.Join(spec.Dir, runDir)
	// 0700: only the VM's owner reaches the agent socket inside.
	if err := os.MkdirAll(run, 0o700); err != nil {
		return "", err
	}
	b, err := guestConfig(spec).Encode()
	if err != nil {
		return "", fmt.Errorf("guest config: %w", err)
	}
	if cfgDir, err = newConfigDir(spec.Dir, append(b, '\n')); err != nil {
		return "", err
	}
	// A stale socket from an earlier run would make dials fail confusingly.
	_ = os.Remove(filepath.Join(run, agentSock))
	if spec.SerialLog == "" {
		return cfgDir, nil
	}
	target := filepath.Join(run, consoleLog)
	if rel, err := filepath.Rel(filepath.Dir(spec.SerialLog), target); err == nil {
		target = rel
	}
	_ = os.Remove(spec.SerialLog)
	if err := os.Symlink(target, spec.SerialLog); err != nil {
		return "", err
	}
	return cfgDir, nil
}

package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/network"
)

// A container's network is what the spec's NICs say: none gives it
// NetworkMode "none" (only lo); one NIC names the Docker network it joins
// (NIC.Network, made by internal/network for an mvm network), where Docker
// assigns its address and its embedded DNS resolves the VM's aliases. The
// agent configures nothing: Docker has wired the NIC before PID 1 starts.

// noNetwork is Docker's network mode for a container with only lo.
const noNetwork = "none"

// netCallTimeout bounds the network lookups around a container's start.
const netCallTimeout = 10 * time.Second

// networkingConfig is the create body's NetworkingConfig.
type networkingConfig struct {
	EndpointsConfig map[string]endpointConfig `json:"EndpointsConfig"`
}

type endpointConfig struct {
	Aliases []string `json:"Aliases,omitempty"`
}

// portBinding is one HostConfig.PortBindings entry.
type portBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

// attachment is where a container goes: a Docker network and the names
// other containers on it reach this one by.
type attachment struct {
	Network string
	Aliases []string
	// Internal: the Docker network has no way out.
	Internal bool
}

// resolveNetwork checks the spec's NICs and finds the Docker network the
// container joins; nil means no network (mode none). The Docker network
// must be one of ours: its mvm.network label gives the "<vm>.<network>"
// alias, the same name a QEMU VM has on our DNS server.
func (e *engine) resolveNetwork(ctx context.Context, spec backend.Spec) (*attachment, error) {
	switch len(spec.NICs) {
	case 0:
		if len(spec.Publish) > 0 {
			return nil, errors.New("docker: published ports need a network; the spec has no NIC")
		}
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("docker: %d NICs; a container joins one network", len(spec.NICs))
	}
	nic := spec.NICs[0]
	if nic.TAP != "" || nic.User != nil || nic.Network == "" {
		return nil, fmt.Errorf("docker: NIC %s is not on a Docker network (TAP %q, user-mode %v)", nic.ID, nic.TAP, nic.User != nil)
	}
	var info struct {
		Name     string            `json:"Name"`
		Internal bool              `json:"Internal"`
		Labels   map[string]string `json:"Labels"`
	}
	ictx, cancel := context.WithTimeout(ctx, netCallTimeout)
	err := e.do(ictx, http.MethodGet, "/networks/"+url.PathEscape(nic.Network), nil, nil, "", &info)
	cancel()
	if isStatus(err, http.StatusNotFound) {
		return nil, fmt.Errorf("docker network %s does not exist (it is made when a VM joins its mvm network; start the VM again)", nic.Network)
	}
	if err != nil {
		return nil, fmt.Errorf("inspect docker network %s: %w", nic.Network, err)
	}
	mvmNet := info.Labels[network.DockerLabelNetwork]
	if info.Labels[network.DockerLabelManaged] != "1" || mvmNet == "" {
		return nil, fmt.Errorf("docker network %s was not made by mvm (no %s label); containers join mvm networks only", nic.Network, network.DockerLabelNetwork)
	}
	return &attachment{Network: nic.Network, Aliases: []string{spec.Name, spec.Name + "." + mvmNet}, Internal: info.Internal}, nil
}

// dropDefaultRoute removes the default route of a container on an
// internal network. Docker before 25.0 gives such containers one, via the
// bridge's address (its isolation rules drop what goes out there); a VM on
// an internal network has none, and neither should the container, so that
// a connection out fails at once and the host behind the gateway is not a
// way out. The agent configures no network, and the container never gets
// CAP_NET_ADMIN: the route is deleted from the host side in the
// container's namespace when we may (root), else by one privileged
// process through Docker's exec API (which needs ip(8) in the image and a
// daemon allowed every capability). On Docker 25+ there is no route to
// delete. Failing is logged, not fatal: Docker's rules still drop egress.
func (e *engine) dropDefaultRoute(ctx context.Context, container string) {
	ctx, cancel := context.WithTimeout(ctx, netCallTimeout)
	defer cancel()
	cs, err := e.inspect(ctx, container)
	if err != nil {
		slog.Debug("docker: inspect container for its default route", "container", container, "err", err)
		return
	}
	herr := dropDefaultRouteIn(cs.State.Pid)
	if herr == nil {
		return
	}
	code, err := e.execWait(ctx, container, []string{"ip", "-4", "route", "del", "default"}, true)
	switch {
	case err != nil:
		slog.Warn("docker: could not remove the default route of a container on an internal network", "container", container, "host_side", herr, "exec", err)
	case code != 0:
		// Docker 25+ (no route), no ip(8), or exec refused its capabilities.
		slog.Debug("docker: no default route removed", "container", container, "host_side", herr, "exec_exit", code)
	}
}

// applyNetwork sets b's network mode, endpoint and published ports.
func applyNetwork(b *createBody, att *attachment, pub []backend.Publish) {
	if att == nil {
		b.HostConfig.NetworkMode = noNetwork
		return
	}
	b.HostConfig.NetworkMode = att.Network
	b.NetworkingConfig = &networkingConfig{EndpointsConfig: map[string]endpointConfig{
		att.Network: {Aliases: att.Aliases},
	}}
	for _, p := range pub {
		key := strconv.Itoa(p.GuestPort) + "/" + p.Proto
		if b.ExposedPorts == nil {
			b.ExposedPorts = map[string]struct{}{}
			b.HostConfig.PortBindings = map[string][]portBinding{}
		}
		b.ExposedPorts[key] = struct{}{}
		b.HostConfig.PortBindings[key] = append(b.HostConfig.PortBindings[key], portBinding{HostIP: p.HostIP, HostPort: strconv.Itoa(p.HostPort)})
	}
}

// NetAddress returns the container's IPv4 address and MAC on the Docker
// network it joined; empty strings for a container without one.
func (h *Handle) NetAddress(ctx context.Context) (ip, mac string, err error) {
	if h.rec.Network == "" {
		return "", "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, netCallTimeout)
	defer cancel()
	cs, err := h.eng.inspect(ctx, h.rec.Container)
	if err != nil {
		return "", "", fmt.Errorf("inspect container %s: %w", h.rec.Container, err)
	}
	ep, ok := cs.NetworkSettings.Networks[h.rec.Network]
	if !ok {
		return "", "", fmt.Errorf("container %s is not on docker network %s", h.rec.Container, h.rec.Network)
	}
	return ep.IPAddress, ep.MacAddress, nil
}

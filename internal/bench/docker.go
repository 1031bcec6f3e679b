package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend/docker"
)

// DockerTarget is the most `mvmctl exec` may cost against `docker exec`
// on the same container.
const DockerTarget = 0.3

// DockerUsable is nil when the Docker backend can run here and the docker
// CLI (the baseline) is on PATH, else why not.
func DockerUsable(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("no docker CLI for the baseline: %w", err)
	}
	return (&docker.Backend{}).Available(ctx)
}

// DockerExec measures `mvmctl exec NAME -- true` on a Docker-backend VM
// against `docker exec C true` on its very container, interleaved. The
// image is mvm's own, built here and imported into Docker by up (the
// backend never pulls). Without a usable Docker the figure is skipped.
func (e *Env) DockerExec(ctx context.Context, o Options) (Figure, error) {
	const name = "exec-docker"
	if err := DockerUsable(ctx); err != nil {
		return Skipped(name, err.Error()), nil
	}
	o.progress("exec: starting a Docker-backend VM")
	if _, err := e.Up(ctx, name, "--backend", "docker", "--network", "none"); err != nil {
		return Figure{}, err
	}
	c, err := e.container(ctx, name)
	if err != nil {
		return Figure{}, err
	}
	mvmT, dockT, err := interleave(o, "exec (Docker)",
		func() (time.Duration, error) { return e.ExecTrue(ctx, name) },
		func() (time.Duration, error) { return dockerCmd(ctx, "exec", c, "true") })
	if err != nil {
		return Figure{}, err
	}
	if err := e.Remove(ctx, name); err != nil {
		return Figure{}, err
	}
	return NewFigure(name, NewSeries("mvmctl exec NAME -- true (Docker backend)", mvmT),
		NewSeries("docker exec C true", dockT), DockerTarget, ""), nil
}

// container is the name of VM name's container, found by the label the
// backend puts on it.
func (e *Env) container(ctx context.Context, name string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", "ps", "--filter", "label="+docker.LabelDir+"="+e.Dirs.VMDir(name), "--format", "{{.Names}}")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("docker ps: %w", err)
	}
	c := strings.TrimSpace(string(out))
	if c == "" || strings.Contains(c, "\n") {
		return "", fmt.Errorf("want one running container for VM %s, docker ps says %q", name, c)
	}
	return c, nil
}

// dockerCmd times one docker CLI call.
func dockerCmd(ctx context.Context, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v", opTimeout)
		}
		return 0, fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return time.Since(t), nil
}

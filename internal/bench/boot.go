package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/supervisor"
)

// readyMarker is what mvm-agent prints on the console once it serves.
const readyMarker = "mvm-agent: ready"

// BootTarget is the most cold up→exec may cost over raw QEMU.
const BootTarget = 1.10

// Boot measures cold `mvmctl up` → first successful exec against raw QEMU
// booting the same kernel, initramfs and disks with the same argv to the
// agent's ready marker on the console, interleaved so both see the same
// host load.
func (e *Env) Boot(ctx context.Context, o Options) (Figure, error) {
	// Warms the image cache and yields the exact QEMU argv mvmctl uses.
	const ref = "boot-ref"
	o.progress("boot: warming the image cache")
	if _, err := e.UpQEMU(ctx, ref); err != nil {
		return Figure{}, err
	}
	argv, err := e.qemuArgv(ref)
	if err != nil {
		return Figure{}, err
	}
	mem, merr := supervisorPSS(e.Dirs.VMDir(ref))
	// Raw QEMU runs on the reference VM's disks, which must be free.
	if _, err := e.Run(ctx, opTimeout, "down", ref); err != nil {
		return Figure{}, err
	}
	serial := e.Path("raw-serial.log")
	raw, err := rawArgv(argv, serial)
	if err != nil {
		return Figure{}, err
	}
	var mvmT, rawT []time.Duration
	var phases []map[string]time.Duration
	for i := range o.N {
		o.progress(fmt.Sprintf("boot: run %d/%d: mvmctl up → exec", i+1, o.N))
		name := fmt.Sprintf("boot-%d", i)
		var ph map[string]time.Duration
		var upD time.Duration
		d, err := e.upExec(ctx, name, func() (time.Duration, error) {
			out, d, err := e.upQEMUJSON(ctx, name)
			if err == nil {
				ph, err = upPhases(out, d)
			}
			upD = d
			return d, err
		})
		if err != nil {
			return Figure{}, err
		}
		ph["first exec"] = d - upD
		phases = append(phases, ph)
		mvmT = append(mvmT, d)
		if err := e.Remove(ctx, name); err != nil {
			return Figure{}, err
		}
		o.progress(fmt.Sprintf("boot: run %d/%d: raw QEMU", i+1, o.N))
		if d, err = rawBoot(ctx, raw, serial); err != nil {
			return Figure{}, err
		}
		rawT = append(rawT, d)
	}
	if err := e.Remove(ctx, ref); err != nil {
		return Figure{}, err
	}
	f := NewFigure("boot", NewSeries("mvmctl up → first exec OK", mvmT),
		NewSeries("raw QEMU → agent ready", rawT), BootTarget, "")
	f.Phases = medianPhases(phases)
	if merr == nil {
		f.SupervisorPSS = &mem
	} else {
		f.Note = "supervisor memory not measured: " + merr.Error()
	}
	return f, nil
}

// upQEMUJSON is UpQEMU with --json, returning the progress events too.
func (e *Env) upQEMUJSON(ctx context.Context, name string) (string, time.Duration, error) {
	e.mu.Lock()
	e.vms = append(e.vms, name)
	e.mu.Unlock()
	t := time.Now()
	out, err := e.Run(ctx, upTimeout, "up", "--name", name, "--backend", "qemu", "--network", "none", "--json")
	return out, time.Since(t), err
}

// upExec times up (the function) followed by `exec NAME -- true`.
func (e *Env) upExec(ctx context.Context, name string, up func() (time.Duration, error)) (time.Duration, error) {
	t := time.Now()
	if _, err := up(); err != nil {
		return 0, err
	}
	if _, err := e.ExecTrue(ctx, name); err != nil {
		return 0, err
	}
	return time.Since(t), nil
}

// qemuArgv is the QEMU command line the supervisor of VM name runs; it
// also records the accelerator in it.
func (e *Env) qemuArgv(name string) ([]string, error) {
	p := filepath.Join(e.Dirs.VMDir(name), supervisor.ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read QEMU argv: %w", err)
	}
	var c supervisor.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", p, err)
	}
	if len(c.Argv) == 0 {
		return nil, fmt.Errorf("%s has no argv", p)
	}
	for i := 0; i+1 < len(c.Argv); i++ {
		if c.Argv[i] == "-accel" {
			e.accel = c.Argv[i+1]
		}
	}
	return c.Argv, nil
}

// rawBoot runs QEMU with argv until the serial log shows the ready marker.
func rawBoot(ctx context.Context, argv []string, serial string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_ = os.Remove(serial)
	cmd := exec.Command(argv[0], argv[1:]...)
	// Killed by us on every path, and by the kernel if we die first.
	cmd.SysProcAttr = childAttr(syscall.SIGKILL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("raw QEMU: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(serial); err == nil && bytes.Contains(b, []byte(readyMarker)) {
			return time.Since(t0), nil
		}
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
				return 0, err
			}
			return 0, fmt.Errorf("raw QEMU never printed %q: %s", readyMarker, strings.TrimSpace(stderr.String()))
		case <-tick.C:
		}
	}
}

// rawArgv is mvm's QEMU argv made to run without the supervisor: the
// console chardev (a socket the supervisor hands over as a descriptor)
// writes the file serial instead, and the agent port goes nowhere.
func rawArgv(argv []string, serial string) ([]string, error) {
	out := append([]string(nil), argv...)
	found := false
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-chardev" {
			continue
		}
		switch id := chardevID(out[i+1]); id {
		case "console":
			out[i+1] = "file,id=console,path=" + strings.ReplaceAll(serial, ",", ",,")
			found = true
		default:
			if strings.Contains(out[i+1], "fd=") {
				out[i+1] = "null,id=" + id
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("no console chardev in the QEMU argv: %v", argv)
	}
	return out, nil
}

func chardevID(opts string) string {
	for _, kv := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(kv, "id="); ok {
			return v
		}
	}
	return ""
}

package image

import (
	"fmt"
	"os"
	"strings"
)

// Initramfs layout shared with the agent (cmd/mvm-agent): /init is the agent,
// modules sit in /lib/modules/<name>.ko and /etc/mvm/modules lists their
// file names in load order.
const (
	initramfsModulesDir  = "lib/modules"
	initramfsModulesList = "etc/mvm/modules"
)

// buildInitramfs writes the newc archive for agent + modules to dst.
func buildInitramfs(dst, agentPath string, mods []module) error {
	a := newCPIO()
	add := func(e cpioEntry) error { return a.Add(e) }
	for _, d := range []string{"dev", "proc", "sys", "newroot", "run", "etc", "etc/mvm", "lib", initramfsModulesDir} {
		if err := add(cpioEntry{Name: d, Type: cpioDir, Perm: 0o755}); err != nil {
			return err
		}
	}
	if err := add(cpioEntry{Name: "tmp", Type: cpioDir, Perm: 0o1777}); err != nil {
		return err
	}
	// The kernel opens /dev/console before running /init; without the node
	// early output from init is lost.
	if err := add(cpioEntry{Name: "dev/console", Type: cpioCharDev, Perm: 0o600, Major: 5, Minor: 1}); err != nil {
		return err
	}
	if err := add(cpioEntry{Name: "init", Type: cpioRegular, Perm: 0o755, Source: agentPath}); err != nil {
		return err
	}
	var list strings.Builder
	for _, m := range mods {
		data, err := readModule(m.Path)
		if err != nil {
			return err
		}
		if err := add(cpioEntry{Name: initramfsModulesDir + "/" + m.FileName(), Type: cpioRegular, Perm: 0o644, Data: data}); err != nil {
			return err
		}
		list.WriteString(m.FileName() + "\n")
	}
	if err := add(cpioEntry{Name: initramfsModulesList, Type: cpioRegular, Perm: 0o644, Data: []byte(list.String())}); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	if _, err := a.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs: %w", err)
	}
	return f.Close()
}

package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestWriteConfigDrive(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "tune2fs", "debugfs", "e2fsck"} {
		if _, err := lookTool(tool, "e2fsprogs"); err != nil {
			t.Skipf("needs %s (package e2fsprogs)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := &guestcfg.Config{Version: 1, Name: "web", Hostname: "web",
		Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: guestcfg.SerialPortName},
		Policy:    guestcfg.Policy{Console: true}, Env: []string{"A=b c"}}
	path := filepath.Join(t.TempDir(), "config.ext4")
	for range 2 { // the second write replaces the first
		if err := WriteConfigDrive(ctx, path, cfg, ""); err != nil {
			t.Fatal(err)
		}
	}
	fsck(t, path)
	stats := debugfs(t, path, "stats")
	if !strings.Contains(stats, "Filesystem volume name:   "+guestcfg.ConfigLabel+"\n") {
		t.Errorf("label wrong:\n%s", stats)
	}
	if !strings.Contains(stats, "read-only") {
		t.Errorf("read-only feature missing:\n%s", stats)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != configDriveSize {
		t.Errorf("size: %v %v", fi, err)
	}
	got, err := guestcfg.Decode(strings.NewReader(debugfs(t, path, "cat /"+guestcfg.FileName)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "web" || !got.Policy.Console || got.Env[0] != "A=b c" {
		t.Errorf("decoded %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".config-drive-*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}

	bad := *cfg
	bad.Hostname = "Not Valid"
	for _, format := range []string{"", guestcfg.DriveFormat} {
		if err := WriteConfigDrive(ctx, filepath.Join(t.TempDir(), "x"), &bad, format); err == nil {
			t.Errorf("format %q: invalid config accepted", format)
		}
	}
}

func TestWriteRawConfigDrive(t *testing.T) {
	ctx := context.Background()
	cfg := &guestcfg.Config{Version: 1, Name: "web", Hostname: "web",
		Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: guestcfg.SerialPortName},
		Policy:    guestcfg.Policy{Console: true}, GuestPrivateKey: "secret"}
	path := filepath.Join(t.TempDir(), "config.img")
	for range 2 { // the second write replaces the first
		if err := WriteConfigDrive(ctx, path, cfg, guestcfg.DriveFormat); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Same size as the ext4 drive (a snapshot's placeholder has it), and
	// private: the drive holds the guest's key.
	if fi.Size() != configDriveSize || fi.Mode().Perm() != 0o600 {
		t.Errorf("size %d mode %v, want %d 0600", fi.Size(), fi.Mode().Perm(), configDriveSize)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := guestcfg.ReadDrive(f)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "web" || !got.Policy.Console || got.GuestPrivateKey != "secret" {
		t.Errorf("decoded %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".config-drive-*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if err := WriteConfigDrive(ctx, path, cfg, "floppy"); err == nil {
		t.Error("unknown format accepted")
	}
}

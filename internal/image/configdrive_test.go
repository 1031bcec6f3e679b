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
		if err := WriteConfigDrive(ctx, path, cfg); err != nil {
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
	if err := WriteConfigDrive(ctx, filepath.Join(t.TempDir(), "x"), &bad); err == nil {
		t.Error("invalid config accepted")
	}
}

package security

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/store"
)

func TestHostKeyCheck(t *testing.T) {
	// A real key, made the way mvmctl makes it, to copy into each case.
	keyDir := t.TempDir()
	if _, err := auth.LoadOrCreateHostKey(keyDir); err != nil {
		t.Fatal(err)
	}
	realKey, err := os.ReadFile(auth.HostKeyPath(keyDir))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		key    string // "" : no key file
		mode   os.FileMode
		vms    int
		euid   int // 0: ours
		status Status
		want   string
	}{
		{name: "none yet, no VMs", status: Info, want: "does not exist yet"},
		{name: "gone while VMs exist", vms: 2, status: Warn, want: "refuse mvmctl's new one"},
		{name: "good key", key: string(realKey), mode: 0o600, status: Pass, want: "Ed25519 SHA256:"},
		{name: "readable by others", key: string(realKey), mode: 0o640, status: Fail, want: "can pass as you to every VM"},
		{name: "writable by others", key: string(realKey), mode: 0o622, status: Fail, want: "writable by group or others"},
		{name: "not PEM", key: "hello\n", mode: 0o600, status: Fail, want: "not a single PKCS#8 PEM block"},
		{name: "trailing data", key: string(realKey) + "junk\n", mode: 0o600, status: Fail, want: "not a single PKCS#8 PEM block"},
		{name: "someone else's", key: string(realKey), mode: 0o600, euid: os.Geteuid() + 1, status: Fail, want: "not by you"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), auth.HostKeyDir)
			mkdir(t, dir, 0o700)
			p := filepath.Join(dir, auth.HostKeyFile)
			if tt.key != "" {
				write(t, p, tt.key, tt.mode)
			}
			euid := os.Geteuid()
			if tt.euid != 0 {
				euid = tt.euid
			}
			c := hostKeyCheck(p, euid, tt.vms)
			wantOne(t, []Check{c}, tt.status, tt.want)
			if tt.key == "" {
				if _, err := os.Stat(p); err == nil {
					t.Error("the check created a host key")
				}
			}
		})
	}
}

func TestAgentDirectories(t *testing.T) {
	tests := []struct {
		name       string
		config     os.FileMode
		agent      os.FileMode // 0: no agent directory
		wantConfig Status
		wantAgent  Status
	}{
		{"both private", 0o700, 0o700, Pass, Pass},
		{"no key directory yet", 0o700, 0, Pass, Info},
		{"config readable by others", 0o755, 0o700, Warn, Pass},
		{"key directory writable by group", 0o700, 0o770, Pass, Fail},
		{"config writable by others", 0o777, 0o700, Fail, Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			mkdir(t, e.Dirs.Config, tt.config)
			if tt.agent != 0 {
				mkdir(t, filepath.Join(e.Dirs.Config, auth.HostKeyDir), tt.agent)
			}
			cs := checkAgentAuth(e)
			if got := only(cs, "agent config directory"); len(got) != 1 || got[0].Status != tt.wantConfig {
				t.Errorf("config directory: %+v, want %s", got, tt.wantConfig)
			}
			if got := only(cs, "agent key directory"); len(got) != 1 || got[0].Status != tt.wantAgent {
				t.Errorf("key directory: %+v, want %s", got, tt.wantAgent)
			}
			if _, err := os.Stat(auth.HostKeyPath(e.Dirs.Config)); err == nil {
				t.Error("the check created a host key")
			}
		})
	}
}

func TestGuestKeyPins(t *testing.T) {
	_, pub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	pin, err := auth.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		state  string
		pin    string // "" : none
		mode   os.FileMode
		status Status
		want   string
	}{
		{"running, pinned", "running", pin + "\n", 0o600, Pass, "pinned for 1 VM: web"},
		{"pin readable by others is fine", "running", pin + "\n", 0o644, Pass, "pinned for 1 VM"},
		{"running without a pin", "running", "", 0, Warn, "refuses to talk to it"},
		{"stopped without a pin", "stopped", "", 0, Info, "its next start makes one"},
		{"pin writable by others", "running", pin + "\n", 0o666, Fail, "writable by group or others"},
		{"a private key where the pin goes", "running", "ed25519-private:AAAA\n", 0o600, Warn, "unusable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			rec := addVM(t, e, store.Record{Name: "web", State: tt.state, Backend: "qemu"})
			if tt.pin != "" {
				write(t, filepath.Join(rec.Dir, guestPinFile), tt.pin, tt.mode)
			}
			c := wantOne(t, pinChecks(e), tt.status, tt.want)
			if strings.Contains(c.Detail, "AAAA") {
				t.Errorf("the detail repeats the file's content: %s", c.Detail)
			}
		})
	}
}

func TestGuestKeyPinsListEveryVM(t *testing.T) {
	e := testEnv(t)
	if got := pinChecks(e); len(got) != 1 || got[0].Status != Info {
		t.Fatalf("no VMs: %+v", got)
	}
	_, pub, _ := auth.NewGuestKey()
	pin, _ := auth.MarshalPublicKey(pub)
	for _, n := range []string{"a", "b"} {
		rec := addVM(t, e, store.Record{Name: n, State: "running"})
		write(t, filepath.Join(rec.Dir, guestPinFile), pin, 0o600)
	}
	addVM(t, e, store.Record{Name: "c", State: "running"})
	got := pinChecks(e)
	if s := statuses(got); len(s) != 2 || s[0] != Pass || s[1] != Warn {
		t.Fatalf("statuses %v: %+v", s, got)
	}
	if !strings.Contains(got[0].Detail, "2 VMs: a, b") || !strings.Contains(got[1].Detail, "VM c") {
		t.Errorf("%+v", got)
	}
}

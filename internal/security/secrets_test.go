package security

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/audit"
	"github.com/mvm-dev/mvm/internal/store"
)

func TestSecrets(t *testing.T) {
	tests := []struct {
		name string
		vms  []store.Record
		want []string
	}{
		{"none", []store.Record{{Name: "web", State: "running"}}, []string{"no VM was given secrets"}},
		{"running and stopped", []store.Record{
			{Name: "db", State: "stopped", Secrets: []string{"db_password"}},
			{Name: "web", State: "running", Secrets: []string{"api_token", "tls.key"}},
		}, []string{"db (db_password) [stopped: asked for again at start]", "web (api_token, tls.key);", "/run/secrets", "--drop-secrets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Env{}
			for i := range tt.vms {
				e.VMs = append(e.VMs, &tt.vms[i])
			}
			wantOne(t, checkSecrets(e), Info, tt.want...)
		})
	}
}

func TestGuestRAM(t *testing.T) {
	const ext4 = 0xef53
	tests := []struct {
		name   string
		shm    func(string) (int64, error)
		vm     *qemuVMSpec
		status []Status
		want   string
	}{
		{"/dev/shm is a tmpfs", nil, nil, []Status{Pass}, "is a tmpfs"},
		{"/dev/shm on a disk", func(string) (int64, error) { return ext4, nil }, nil, []Status{Warn}, "is not a tmpfs (filesystem type 0xef53)"},
		{"no /dev/shm", func(string) (int64, error) { return 0, os.ErrNotExist }, nil, []Status{Warn}, "in the VM directory, on disk"},
		{"a running VM's RAM on tmpfs", nil, &qemuVMSpec{memPath: "/dev/shm/mvm-1.mem", memShare: true}, []Status{Pass}, "is a tmpfs"},
		{"a running VM's RAM in its directory", nil, &qemuVMSpec{memPath: "VMDIR/mem", memShare: true}, []Status{Pass, Warn}, "which is on a disk, and it holds secrets"},
		{"a clone maps its snapshot's file", nil, &qemuVMSpec{memPath: "VMDIR/mem", memShare: false}, []Status{Pass}, "is a tmpfs"},
		{"anonymous RAM", nil, &qemuVMSpec{}, []Status{Pass}, "is a tmpfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			if tt.shm != nil {
				e.Statfs = tt.shm
			}
			if tt.vm != nil {
				s := *tt.vm
				s.name, s.state, s.accel, s.pid, s.status = "web", "running", "tcg", 77, procStatusText(1, 1, 2, 1, 0)
				vmDir := filepath.Join(e.Dirs.VMsDir(), "web")
				s.memPath = strings.Replace(s.memPath, "VMDIR", vmDir, 1)
				e.Statfs = func(p string) (int64, error) {
					if p == vmDir {
						return ext4, nil
					}
					return tmpfsMagic, nil
				}
				rec := addQEMUVM(t, e, s)
				rec.Secrets = []string{"db_password"}
			}
			got := checkGuestRAM(e)
			if s := statuses(got); !slices.Equal(s, tt.status) {
				t.Fatalf("statuses %v, want %v: %+v", s, tt.status, got)
			}
			if last := got[len(got)-1]; !strings.Contains(last.Detail, tt.want) {
				t.Errorf("%q does not say %q", last.Detail, tt.want)
			}
		})
	}
}

func TestAudit(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		status Status
		want   string
	}{
		{"no trail yet", func(*testing.T, string) {}, Warn, "no audit trail yet"},
		{"empty directory", func(t *testing.T, dir string) { mkdir(t, dir, 0o700) }, Warn, "no audit trail yet"},
		{"intact", func(t *testing.T, dir string) { appendAudit(t, dir, 3) }, Pass, "3 records in 1 file, hash chain intact"},
		{"a record edited", func(t *testing.T, dir string) {
			appendAudit(t, dir, 3)
			p := filepath.Join(dir, audit.CurrentName)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			write(t, p, strings.Replace(string(b), `"target":"vm1"`, `"target":"vmX"`, 1), 0o600)
		}, Fail, "chain broken"},
		{"a record removed", func(t *testing.T, dir string) {
			appendAudit(t, dir, 3)
			p := filepath.Join(dir, audit.CurrentName)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitAfter(string(b), "\n")
			write(t, p, lines[0]+lines[2], 0o600)
		}, Fail, "1 good records before it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(t)
			dir := audit.Dir(e.Dirs.State)
			tt.setup(t, dir)
			wantOne(t, checkAudit(e), tt.status, tt.want)
		})
	}
}

func appendAudit(t *testing.T, dir string, n int) {
	t.Helper()
	l := audit.New(dir)
	for i := range n {
		if _, err := l.Append(context.Background(), audit.Record{Verb: "up", Target: "vm" + string(rune('0'+i)), Args: []string{"up"}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
}

package vm

import (
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
)

func TestCheckExtraDisks(t *testing.T) {
	ok := []backend.Disk{{ID: "ctr-1", Path: "/var/lib/x.ext4"}, {ID: "data", Path: "/d.img"}}
	if err := checkExtraDisks(UpOptions{Disks: ok}); err != nil {
		t.Fatalf("valid disks refused: %v", err)
	}
	for name, o := range map[string]UpOptions{
		"relative path": {Disks: []backend.Disk{{ID: "a", Path: "x.img"}}},
		"root id":       {Disks: []backend.Disk{{ID: "root", Path: "/x"}}},
		"config id":     {Disks: []backend.Disk{{ID: "config", Path: "/x"}}},
		"empty id":      {Disks: []backend.Disk{{Path: "/x"}}},
		"comma id":      {Disks: []backend.Disk{{ID: "a,file=/etc/shadow", Path: "/x"}}},
		"duplicate id":  {Disks: []backend.Disk{{ID: "a", Path: "/x"}, {ID: "a", Path: "/y"}}},
		"snapshot":      {Disks: ok, FromSnapshot: "s"},
		"template":      {Disks: ok, Template: "t"},
	} {
		if err := checkExtraDisks(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

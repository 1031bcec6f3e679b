package qemu

import (
	"os"
	"testing"

	"github.com/mvm-dev/mvm/internal/supervisor"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
		os.Exit(supervisor.Main(os.Args[2:]))
	}
	// RAM files of test VMs go to a directory of the run's own, so no
	// failed or killed test leaves any in the host's /dev/shm.
	shm, err := os.MkdirTemp("", "mvmshm")
	if err != nil {
		panic(err)
	}
	shmDir = shm
	code := m.Run()
	os.RemoveAll(shm)
	os.Exit(code)
}

func writeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

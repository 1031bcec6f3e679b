package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Proc identifies a process across pid reuse: the pid plus its start time
// (clock ticks after boot, field 22 of /proc/<pid>/stat).
type Proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// ReadProc returns the identity of the running process pid.
func ReadProc(pid int) (Proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	start, err := parseStartTime(b)
	if err != nil {
		return Proc{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return Proc{Pid: pid, Start: start}, nil
}

// parseStartTime extracts starttime from a /proc/<pid>/stat line. The comm
// field may contain spaces and parentheses, so fields are counted from the
// last ')'.
func parseStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := bytes.Fields(stat[i+1:])
	// After comm: state is field 3, so starttime (22) is index 22-3 = 19.
	if len(fields) < 20 {
		return 0, errors.New("short stat")
	}
	if string(fields[0]) == "Z" || string(fields[0]) == "X" {
		return 0, errors.New("process is a zombie")
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// Alive reports whether p is still the same running process.
func (p Proc) Alive() bool {
	if p.Pid <= 0 {
		return false
	}
	cur, err := ReadProc(p.Pid)
	return err == nil && cur.Start == p.Start
}

// Signal delivers sig only if p is still the process it was; a recycled pid
// is never signalled.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return os.ErrProcessDone
	}
	return syscall.Kill(p.Pid, sig)
}

package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Logs writes the last n lines (n <= 0: all) of the VM's serial console log
// to w and, with follow, keeps copying new output until ctx ends or the VM
// stops.
func (m *Manager) Logs(ctx context.Context, name string, n int, follow bool, w io.Writer) error {
	rec, err := m.Store.Get(name)
	if err != nil {
		return err
	}
	f, err := os.Open(m.SerialLog(rec.Name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("VM %q has no console log yet", name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeTail(f, n, w); err != nil {
		return err
	}
	if !follow {
		return nil
	}
	r := bufio.NewReader(f)
	buf := make([]byte, 32<<10)
	idle := 0
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
			idle = 0
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		// Every few seconds of silence, stop following a VM that is gone.
		if idle++; idle%25 == 0 {
			if r, err := m.Get(ctx, name); err == nil && !active(r.State) {
				return nil
			}
		}
	}
}

func writeTail(f *os.File, n int, w io.Writer) error {
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if n > 0 {
		lines := bytes.SplitAfter(b, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		if len(lines) > n {
			b = bytes.Join(lines[len(lines)-n:], nil)
		}
	}
	_, err = w.Write(b)
	return err
}

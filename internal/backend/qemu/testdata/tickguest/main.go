// Command tickguest is the guest of the snapshot test: it runs as /init,
// prints "tick N" on the console every 100 ms, and serves an echo over the
// agent's virtio-serial port with the same serialmux framing as mvm-agent,
// so the test can check that the host relay finds the guest after a restore.
// It remembers the last message echoed; "last?" returns it, so the test can
// tell whether two clones of one snapshot share memory.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/transport/serialmux"
	"golang.org/x/sys/unix"
)

func main() {
	fmt.Println("tickguest start")
	if err := syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		fmt.Println("mount /dev:", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fmt.Println("mount /sys:", err)
	}
	mods, _ := filepath.Glob("/modules/*.ko")
	for _, m := range order(mods) {
		if err := insmod(m); err != nil {
			fmt.Println("insmod", m, err)
		}
	}
	go serve()
	for n := 1; ; n++ {
		fmt.Printf("tick %d\n", n)
		time.Sleep(100 * time.Millisecond)
	}
}

// order puts the modules in dependency order.
func order(mods []string) []string {
	var out []string
	for _, want := range []string{"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "virtio_console.ko"} {
		for _, m := range mods {
			if filepath.Base(m) == want {
				out = append(out, m)
			}
		}
	}
	return out
}

func insmod(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

func portPath() string {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == guestcfg.SerialPortName {
			return "/dev/" + filepath.Base(filepath.Dir(n))
		}
	}
	return ""
}

var (
	mu   sync.Mutex
	last []byte
)

func serve() {
	for sessions := 1; ; {
		p := portPath()
		if p == "" {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		port, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		sess, err := serialmux.Server(port)
		if err != nil {
			port.Close()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		fmt.Printf("session %d up\n", sessions)
		for {
			st, err := sess.Accept()
			if err != nil {
				break
			}
			go func() {
				defer st.Close()
				b, _ := io.ReadAll(io.LimitReader(st, 1<<16))
				mu.Lock()
				defer mu.Unlock()
				if string(b) == "last?" {
					st.Write(append([]byte("last:"), last...))
					return
				}
				last = append([]byte(nil), b...)
				st.Write(append([]byte("echo:"), b...))
			}()
		}
		sess.Close()
		fmt.Printf("session %d down\n", sessions)
		sessions++
	}
}

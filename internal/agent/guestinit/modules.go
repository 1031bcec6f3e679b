package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// parseModuleList reads /etc/mvm/modules: one file name per line, in load
// order; blank lines and '#' comments are ignored. Names must be plain file
// names inside the modules directory.
func parseModuleList(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "/") || line == "." || line == ".." {
			return nil, fmt.Errorf("line %d: %q is not a module file name", n, line)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

// loadModule loads one module file with finit_module; already loaded is fine.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE // kernel decompresses (5.17+)
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// loadModules loads every listed module in order. A failure is reported and
// loading continues: the root disk may not need that module, and if it does,
// the wait for the root label fails with a message naming this one.
func loadModules(c *Console, listPath, dir string) (failed []string, err error) {
	f, err := os.Open(listPath)
	if err != nil {
		return nil, err
	}
	names, err := parseModuleList(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", listPath, err)
	}
	for _, n := range names {
		if err := loadModule(filepath.Join(dir, n)); err != nil {
			c.Printf("module %s: %v", n, err)
			failed = append(failed, n)
			continue
		}
	}
	c.Printf("loaded %d/%d modules", len(names)-len(failed), len(names))
	return failed, nil
}

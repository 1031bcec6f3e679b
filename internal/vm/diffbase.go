package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/store"
)

// baseHashLimit is the largest file whose content a diff compares by hash
// (host and guest alike); larger ones compare by size and mtime.
const baseHashLimit = 16 << 20

// baselineTimeout bounds reading an image's root filesystem.
const baselineTimeout = 5 * time.Minute

// diffBaseline returns the entries of the ext4 image rootfs, from a cache
// keyed by the image file's identity, building it on first use.
func (m *Manager) diffBaseline(ctx context.Context, rootfs string) ([]proto.DiffEntry, error) {
	fi, err := os.Stat(rootfs)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d", rootfs, fi.Size(), fi.ModTime().UnixNano())))
	dir := filepath.Join(m.Dirs.Cache, "diff")
	cached := filepath.Join(dir, hex.EncodeToString(key[:12])+".json")
	if b, err := os.ReadFile(cached); err == nil {
		var es []proto.DiffEntry
		if json.Unmarshal(b, &es) == nil {
			return es, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	es, err := readExt4Tree(ctx, rootfs, dir)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(es)
	if err != nil {
		return nil, err
	}
	if err := store.WriteFileAtomic(cached, b, 0o600); err != nil {
		m.Log.Warn("cache diff baseline", "err", err)
	}
	return es, nil
}

// readExt4Tree lists an ext4 image with debugfs (e2fsprogs): modes and
// owners from its directory listings, which keep every bit, and contents,
// mtimes and link targets from a dump of the tree into a scratch directory
// under tmpDir, which is removed after.
func readExt4Tree(ctx context.Context, image, tmpDir string) ([]proto.DiffEntry, error) {
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		if debugfs, err = exec.LookPath("/sbin/debugfs"); err != nil {
			return nil, errors.New("debugfs not found (Debian/Ubuntu: apt install e2fsprogs)")
		}
	}
	scratch, err := os.MkdirTemp(tmpDir, ".rdump-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if out, err := exec.CommandContext(ctx, debugfs, "-R", "rdump / "+scratch, image).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("debugfs rdump: %w: %s", err, strings.TrimSpace(string(out)))
	}
	meta, err := listExt4(ctx, debugfs, image, scratch)
	if err != nil {
		return nil, err
	}
	for i := range meta {
		e := &meta[i]
		local := filepath.Join(scratch, filepath.FromSlash(e.Path))
		fi, err := os.Lstat(local)
		if err != nil {
			continue // not dumped (special file without privileges): compare metadata only
		}
		if e.Type != proto.DiffDir && e.Type != proto.DiffSymlink {
			e.MtimeNS = fi.ModTime().UnixNano()
		}
		switch e.Type {
		case proto.DiffSymlink:
			if e.Link, err = os.Readlink(local); err != nil {
				return nil, err
			}
		case proto.DiffFile:
			if e.Size <= baseHashLimit {
				if e.SHA256, err = hashFile(local); err != nil {
					return nil, err
				}
			}
		case proto.DiffChar, proto.DiffBlock:
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				e.Rdev = uint64(st.Rdev)
			}
		}
	}
	return meta, nil
}

// listExt4 walks the image's directories breadth first, one debugfs run
// per level, and returns an entry per object with type, mode, owner and size.
func listExt4(ctx context.Context, debugfs, image, scratch string) ([]proto.DiffEntry, error) {
	es := []proto.DiffEntry{{Path: "/", Type: proto.DiffDir}}
	if fi, err := os.Stat(scratch); err == nil {
		es[0].Mode = uint32(fi.Mode().Perm())
	}
	level := []string{"/"}
	for depth := 0; len(level) > 0; depth++ {
		if depth > 256 {
			return nil, errors.New("directory tree deeper than 256 levels")
		}
		var cmds bytes.Buffer
		for _, d := range level {
			if strings.ContainsAny(d, "\"\n") {
				return nil, fmt.Errorf("cannot list directory %q with debugfs", d)
			}
			fmt.Fprintf(&cmds, "ls -p \"%s\"\n", d)
		}
		cmdFile := filepath.Join(scratch, ".cmds")
		if err := os.WriteFile(cmdFile, cmds.Bytes(), 0o600); err != nil {
			return nil, err
		}
		out, err := exec.CommandContext(ctx, debugfs, "-f", cmdFile, image).Output()
		if err != nil {
			return nil, fmt.Errorf("debugfs ls: %w", err)
		}
		var next []string
		found, err := parseDebugfsLs(out, level)
		if err != nil {
			return nil, err
		}
		for _, e := range found {
			if e.Path == "/" {
				es[0].Mode, es[0].UID, es[0].GID = e.Mode, e.UID, e.GID
				continue
			}
			es = append(es, e)
			if e.Type == proto.DiffDir {
				next = append(next, e.Path)
			}
		}
		level = next
	}
	return es, nil
}

// parseDebugfsLs reads the output of "ls -p DIR" commands run from a
// command file, in the order of dirs. debugfs echoes each command as
// "debugfs: ls -p ..." before its entries, "/inode/mode/uid/gid/name/size/".
// The root's own "." line fills in the root entry.
func parseDebugfsLs(out []byte, dirs []string) ([]proto.DiffEntry, error) {
	var es []proto.DiffEntry
	i := -1
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "debugfs: ") {
			i++
			if i >= len(dirs) {
				return nil, errors.New("debugfs answered more commands than it was given")
			}
			continue
		}
		if i < 0 || !strings.HasPrefix(line, "/") {
			continue
		}
		f := strings.Split(line, "/")
		// "", inode, mode, uid, gid, name, size, ""
		if len(f) != 8 {
			return nil, fmt.Errorf("debugfs ls: unexpected line %q", line)
		}
		name := f[5]
		if name == "" || f[1] == "0" || name == ".." || (name == "." && dirs[i] != "/") {
			continue // unused slots (inode 0), and the links to parent and self
		}
		mode, err1 := strconv.ParseUint(f[2], 8, 32)
		uid, err2 := strconv.Atoi(f[3])
		gid, err3 := strconv.Atoi(f[4])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("debugfs ls: line %q: %w", line, err)
		}
		p := path.Join(dirs[i], name)
		e := proto.DiffEntry{Path: p, Type: modeType(uint32(mode)), Mode: uint32(mode) & 0o7777, UID: uid, GID: gid}
		if e.Type == "" {
			return nil, fmt.Errorf("debugfs ls: %s has unknown mode %o", p, mode)
		}
		if e.Type == proto.DiffFile || e.Type == proto.DiffSymlink {
			if e.Size, err1 = strconv.ParseInt(f[6], 10, 64); err1 != nil {
				return nil, fmt.Errorf("debugfs ls: line %q: %w", line, err1)
			}
		}
		es = append(es, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if i != len(dirs)-1 {
		return nil, fmt.Errorf("debugfs listed %d of %d directories", i+1, len(dirs))
	}
	return es, nil
}

// modeType maps the S_IFMT bits of an inode mode to a DiffEntry type.
func modeType(mode uint32) string {
	switch mode & 0o170000 {
	case 0o100000:
		return proto.DiffFile
	case 0o040000:
		return proto.DiffDir
	case 0o120000:
		return proto.DiffSymlink
	case 0o020000:
		return proto.DiffChar
	case 0o060000:
		return proto.DiffBlock
	case 0o010000:
		return proto.DiffFIFO
	case 0o140000:
		return proto.DiffSocket
	}
	return ""
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

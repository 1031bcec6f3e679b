package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// hashCacheDir, under the images cache, remembers input hashes: every `up`
// checks that its image is cached by hashing its inputs (kernel, modules,
// agent, busybox: ~20 MiB, 25-30 ms), which a stat can tell are unchanged.
const hashCacheDir = ".hashes"

// hashFileCached is hashFile, remembered by the file's identity and change
// times (device, inode, size, mtime, ctime, all to the nanosecond). ctime
// cannot be set back without root, so a rewritten file always misses. A
// build re-hashes every input with hashFile before it names an entry.
func hashFileCached(cacheDir, path string) (string, error) {
	key, ok := statKey(path)
	if !ok || cacheDir == "" {
		return hashFile(path)
	}
	ksum := sha256.Sum256([]byte(key))
	memo := filepath.Join(cacheDir, hashCacheDir, hex.EncodeToString(ksum[:16]))
	if b, err := os.ReadFile(memo); err == nil && len(b) < 4096 {
		if k, sum, ok := strings.Cut(strings.TrimSpace(string(b)), "\n"); ok && k == key && validSum(sum) {
			return sum, nil
		}
	}
	sum, err := hashFile(path)
	if err != nil {
		return "", err
	}
	// Only remember what still has the identity we hashed under.
	if again, ok := statKey(path); ok && again == key {
		if os.MkdirAll(filepath.Dir(memo), 0o700) == nil {
			tmp := fmt.Sprintf("%s.%d", memo, os.Getpid())
			if os.WriteFile(tmp, []byte(key+"\n"+sum+"\n"), 0o600) == nil {
				_ = os.Rename(tmp, memo)
			}
		}
	}
	return sum, nil
}

// statKey names a regular file's identity and change times.
func statKey(path string) (string, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", false
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", false
	}
	return fmt.Sprintf("%s\x00%d:%d:%d:%d.%d:%d.%d", abs, st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec), true
}

func validSum(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

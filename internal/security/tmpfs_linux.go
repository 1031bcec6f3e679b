package security

import "golang.org/x/sys/unix"

// tmpfsMagic is statfs's f_type of a tmpfs.
const tmpfsMagic = unix.TMPFS_MAGIC

package image

import "golang.org/x/sys/unix"

// noFollow makes an open fail on a symlink instead of writing through it.
const noFollow = unix.O_NOFOLLOW

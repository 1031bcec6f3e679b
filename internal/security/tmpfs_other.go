//go:build !linux

package security

// tmpfsMagic is Linux's TMPFS_MAGIC. Guest RAM files go on /dev/shm only on
// Linux; elsewhere no filesystem reports this type, so the check warns.
const tmpfsMagic = 0x01021994

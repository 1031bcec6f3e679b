// Package store keeps one authoritative record per VM: <state>/vms/<name>/vm.json,
// written atomically (temp file, fsync, rename, fsync dir) under a per-VM
// flock. The record holds what we decided; what is true right now (is the VMM
// alive?) is reconciled by the vm package on every read.
package store

import (
	"errors"
	"time"
)

// Record is a VM's persisted state.
type Record struct {
	Name    string `json:"name"`
	State   string `json:"state"`            // see backend.State
	Reason  string `json:"reason,omitempty"` // why failed/stopped
	Backend string `json:"backend"`
	Image   string `json:"image"`
	// Arch is the guest's GOARCH; "" (records from before it was kept) is
	// the host's. start and restart boot the same arch again.
	Arch        string    `json:"arch,omitempty"`
	ImageDigest string    `json:"image_digest,omitempty"`
	CPUs        int       `json:"cpus"`
	MemoryMiB   int       `json:"memory_mib"`
	PID         int       `json:"pid,omitempty"` // VMM process
	Created     time.Time `json:"created"`
	Started     time.Time `json:"started,omitzero"`
	Dir         string    `json:"dir"`
	// Sources says which precedence level supplied each resource (flag,
	// config-file, recipe, user-config, default).
	Sources map[string]string `json:"sources,omitempty"`
	// ImageRef is what the user asked for (catalog name or recipe path).
	ImageRef string `json:"image_ref,omitempty"`
	// VMConfig is the --config file the VM was created from, if any.
	VMConfig string `json:"vm_config,omitempty"`
	// Boot is what the VM booted from, so start/restart boot the same
	// kernel over the same disk without rebuilding anything.
	Boot *Boot `json:"boot,omitempty"`
	// Snapshot names the snapshot the VM was restored from; `snapshot rm`
	// refuses to delete a snapshot that records still name.
	Snapshot string `json:"snapshot,omitempty"`
	// Template names the template the VM was made from; it boots from
	// the template's files, so `template delete` refuses while it exists.
	Template string `json:"template,omitempty"`
	// Net is the VM's network; nil: no NIC.
	Net *NetInfo `json:"net,omitempty"`
	// Secrets are the names of the secrets the VM was given (--secret).
	// Never their values: start and restart ask for them again.
	Secrets []string `json:"secrets,omitempty"`
	// Pool names the warm pool this VM waits in, until it is handed out
	// (then it is ""); PoolReady says it is restored, re-provisioned and
	// warmed, so a hand-out may take it.
	Pool      string `json:"pool,omitempty"`
	PoolReady bool   `json:"pool_ready,omitempty"`
	// FromPool names the pool a handed-out VM came from.
	FromPool string `json:"from_pool,omitempty"`
}

// NetInfo is where a VM sits on its network. The network's record holds the
// allocation; this copy is for listings and for booting the VM again.
type NetInfo struct {
	Network string `json:"network"`
	Mode    string `json:"mode"`
	IP      string `json:"ip,omitempty"`
	MAC     string `json:"mac,omitempty"`
	// Publish holds the -p specs in canonical form (IP:HOST:GUEST/proto).
	Publish []string `json:"publish,omitempty"`
}

// Boot is the immutable inputs of a VM's cold boot.
type Boot struct {
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Rootfs  string `json:"rootfs,omitempty"`
	Console bool   `json:"console,omitempty"`
	// ConfigDrive is the config drive format the image's agent reads
	// (guestcfg.DriveFormat; "": ext4, images from before the format).
	ConfigDrive string `json:"config_drive,omitempty"`
}

var (
	// ErrNotFound is returned for a VM with no record.
	ErrNotFound = errors.New("no such VM")
	// ErrExists is returned when creating a VM whose name is taken.
	ErrExists = errors.New("VM already exists")
)

//go:build linux

// Package shim is containerd's runtime shim v2 for mvm
// (io.containerd.mvm.v1): each container runs in a microVM of its own,
// its rootfs from containerd's mounts copied into an ext4 disk the guest
// agent chroots the container's processes into.
//
// containerd's own shim library (v2's pkg/shim) is not used: since 2.0
// it writes its bootstrap answer to containerd as JSON (2.2) or protobuf
// (2.3+) and serves the task v3 API, while containerd 1.6 and 1.7 (Debian's)
// read a bare socket address from the shim's stdout and call
// containerd.task.v2.Task. So the shim speaks that older protocol itself,
// on github.com/containerd/ttrpc with the API types from
// github.com/containerd/containerd/api; task v2 is what every containerd
// from 1.2 on understands.
package shim

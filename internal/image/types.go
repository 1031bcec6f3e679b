// Package image builds bootable images (kernel, initramfs, root filesystem)
// from recipes and keeps them content-addressed in the image cache. Cached
// artifacts are immutable: VMs boot from a copy-on-write overlay of them.
package image

import (
	"encoding/json"
	"fmt"
)

// builderVersion is mixed into every digest; bump it whenever the builder's
// output for the same inputs changes.
const builderVersion = "mvm-image-builder/2"

// Artifacts is a built image in the cache. All paths are absolute.
type Artifacts struct {
	Name          string `json:"name"`                   // recipe name, e.g. "minimal"
	Digest        string `json:"digest"`                 // "sha256:<hex>" over recipe + every input
	Dir           string `json:"dir"`                    // cache entry dir
	Kernel        string `json:"kernel"`                 // bzImage (vmlinuz)
	KernelRelease string `json:"kernel_release"`         // e.g. 6.1.0-56-cloud-amd64
	Vmlinux       string `json:"vmlinux,omitempty"`      // uncompressed kernel (ELF on x86), made on request (BuildOptions.Vmlinux)
	Initrd        string `json:"initrd"`                 // newc cpio, uncompressed
	Rootfs        string `json:"rootfs"`                 // ext4 labelled guestcfg.RootLabel; never modify
	Console       bool   `json:"console"`                // image policy access.console
	ConfigDrive   string `json:"config_drive,omitempty"` // config drive format its agent reads (guestcfg.DriveFormat; "": ext4)
	DefaultCPUs   int    `json:"default_cpus"`
	DefaultMemMiB int    `json:"default_memory_mib"`
}

// BuildOptions tunes Ensure.
type BuildOptions struct {
	CacheDir  string             // images root, paths.Dirs.ImagesDir()
	AgentPath string             // static mvm-agent binary to inject
	Arch      string             // GOARCH of the guest; runtime.GOARCH if empty
	Progress  func(stage string) // optional; short stage names
	// Vmlinux also provides the uncompressed kernel (Artifacts.Vmlinux) for
	// VMMs that cannot boot a bzImage; made once per entry, on first request.
	Vmlinux bool
}

// buildStages are the stages of a build, in order (Progress sees others
// too: cached, lock, vmlinux, bootstrap, …).
var buildStages = []string{"kernel", "initramfs", "rootfs", "finalize"}

// StageLabel is stage as a progress line shows it: a build stage with its
// place among them ("[3/4] rootfs"), any other as it is.
func StageLabel(stage string) string {
	for i, s := range buildStages {
		if s == stage {
			return fmt.Sprintf("[%d/%d] %s", i+1, len(buildStages), stage)
		}
	}
	return stage
}

func (o BuildOptions) progress(stage string) {
	if o.Progress != nil {
		o.Progress(stage)
	}
}

// Input is one file that went into a build, recorded in the manifest.
type Input struct {
	Role   string `json:"role"` // kernel, module:NAME, agent, busybox, bootstrap, file:PATH
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// manifest is manifest.json in a cache entry. File names are relative to the
// entry so the cache can move.
type manifest struct {
	Builder       string   `json:"builder"`
	Name          string   `json:"name"`
	Digest        string   `json:"digest"`
	Arch          string   `json:"arch"`
	Kernel        string   `json:"kernel"`
	KernelRelease string   `json:"kernel_release"`
	Initrd        string   `json:"initrd"`
	Rootfs        string   `json:"rootfs"`
	Modules       []string `json:"modules"` // load order
	Console       bool     `json:"console"`
	// ConfigDrive is the config drive format the image's agent reads
	// (guestcfg.DriveFormat); images from before it read ext4 only.
	ConfigDrive   string  `json:"config_drive,omitempty"`
	DefaultCPUs   int     `json:"default_cpus"`
	DefaultMemMiB int     `json:"default_memory_mib"`
	Inputs        []Input `json:"inputs"`
	// Recipe is the canonical recipe the image was built from.
	Recipe json.RawMessage `json:"recipe,omitempty"`
}

// Cache entry file names.
const (
	kernelFile   = "vmlinuz"
	vmlinuxFile  = "vmlinux"
	initrdFile   = "initrd.img"
	rootfsFile   = "rootfs.ext4"
	manifestFile = "manifest.json"
)

package image

// HostKernel reports the kernel image and release a build for goarch would
// use, for `doctor`: the host's installed one, or a foreign arch's from its
// tree (ArchDir).
func HostKernel(goarch string) (path, release string, err error) {
	k, err := kernelFor(goarch)
	if err != nil {
		return "", "", err
	}
	return k.Image, k.Release, nil
}

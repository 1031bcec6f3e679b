package image

// HostKernel reports the kernel image and release a build for goarch would
// use, for `doctor`.
func HostKernel(goarch string) (path, release string, err error) {
	da, err := debArch(goarch)
	if err != nil {
		return "", "", err
	}
	k, err := findKernel(da)
	if err != nil {
		return "", "", err
	}
	return k.Image, k.Release, nil
}

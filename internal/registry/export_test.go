package registry

// SetS3Limits lowers the single-PUT and part sizes so a test reaches the
// multipart path with small blobs; it returns the restore.
func SetS3Limits(single int64, part uint64) func() {
	oldSingle, oldPart := singlePutMax, partSize
	singlePutMax, partSize = single, part
	return func() { singlePutMax, partSize = oldSingle, oldPart }
}

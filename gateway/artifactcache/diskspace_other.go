//go:build !unix

package artifactcache

// diskSize cannot tell the file system's size on this system.
func diskSize(string) (int64, bool) { return 0, false }

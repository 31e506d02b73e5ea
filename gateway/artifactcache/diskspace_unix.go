//go:build unix

package artifactcache

import "golang.org/x/sys/unix"

// diskSize returns the size in bytes of the file system holding dir, and
// whether it could tell.
func diskSize(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Blocks) * int64(st.Bsize), true //nolint:unconvert // field types differ between systems
}

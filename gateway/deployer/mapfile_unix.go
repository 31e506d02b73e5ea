//go:build unix

package deployer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps the file at p read-only, so that a delta is computed from
// the page cache without copying the artifact into the heap. The gateway's
// cached artifacts are immutable while a rollout pins them. unmap releases
// the mapping; b must not be used after it.
func mapFile(p string) (b []byte, unmap func(), err error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := fi.Size()
	if size == 0 {
		return nil, func() {}, nil
	}
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("map %s: %d bytes is too large", p, size)
	}
	b, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", p, err)
	}
	// The scan reads it front to back; a failed hint costs nothing.
	_ = unix.Madvise(b, unix.MADV_SEQUENTIAL)
	return b, func() { _ = unix.Munmap(b) }, nil
}

// Package keyfile reads files that hold secrets — private keys,
// key-encryption keys, credentials — the way ssh reads its keys: only a
// regular file (a FIFO, device or directory at the path is refused, never
// waited on), owned by the user the process runs as or by root, that
// neither group nor others may access, and no larger than the caller
// expects. The checks apply to the file opened, not to whatever the path
// names a moment later; a symbolic link is followed (Kubernetes mounts
// secrets through one) and the file it leads to is checked.
//
// Errors name the path and say how to fix the file; they never quote its
// content.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrTooLarge is reported, wrapped, for a file larger than the caller's
// bound.
var ErrTooLarge = errors.New("larger than expected")

// ReadPrivate returns the content of the secret file at path, at most max
// bytes, after the checks of the package comment. A missing file is an
// error wrapping fs.ErrNotExist.
func ReadPrivate(path string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not hang; it is refused below.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := check(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is %w (over %d bytes)", path, ErrTooLarge, max)
	}
	return data, nil
}

// check applies the package's rules to fi, the file opened at path.
func check(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file but %s", path, kind(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: group and others must have no access; run chmod 600 %s", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); st.Uid != uint32(uid) && st.Uid != 0 {
			return fmt.Errorf("%s is owned by uid %d, not by this process's user (uid %d) or root: another user could replace it; run chown %d %s", path, st.Uid, uid, uid, path)
		}
	}
	return nil
}

// kind names a file type that is not regular.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

package deployer

import (
	"context"
	"fmt"
	"path"
)

// homer is the part of a connection that resolves relative deploy paths.
type homer interface {
	Home(ctx context.Context) (string, error)
}

// ResolvePath returns the deploy path p as the deployment writes it on the
// node behind r: p itself when absolute, else p joined to the SFTP
// server's start directory (SFTP realpath "."). That directory, not the
// login shell's, is the truth: the artifact goes through SFTP, and it
// differs from the shell's $HOME under `internal-sftp -d DIR` or a chroot.
// Every remote command then gets the absolute path, so the deployer's
// scripts and the observe command (fleet truth) read the same directory.
func ResolvePath(ctx context.Context, r homer, p string) (string, error) {
	if path.IsAbs(p) {
		return p, nil
	}
	home, err := r.Home(ctx)
	if err == nil && !path.IsAbs(home) {
		err = fmt.Errorf("the login's home %q is not absolute", home)
	}
	if err != nil {
		return "", fmt.Errorf("resolve %s against the login's home: %w", p, err)
	}
	dir := path.Join(home, p)
	if err := checkPath(dir); err != nil {
		return "", err
	}
	return dir, nil
}

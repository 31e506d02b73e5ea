// Package deploypath decides which directories may be a deployment's
// deploy path, the directory a release is laid out in.
//
// Both layouts change the deploy path itself: the releases layout adds
// releases/, current and .outpost/ to it, and the in-place layout moves
// every entry of it into .outpost/backups/ on each activation. A deploy
// path of /etc, /usr/local or a home directory therefore wrecks a server,
// or locks everyone out of it when the .ssh directory moves away. The
// table below refuses the system's directories; Check applies it to a
// path written in a plan, and the gateway applies Rules again on the node
// to the path with its symlinks resolved, together with what only the node
// knows (the SSH user's home, whether the directory holds .ssh).
//
// The table is a seat belt against mistakes, not a sandbox: an
// environment narrows the paths further with an allow-list of prefixes
// (the control plane's deploy_path_prefixes).
package deploypath

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Scope says which paths a Rule refuses.
type Scope int

const (
	// Itself refuses the directory alone: a directory of its own below
	// it is a fine deploy path (/opt/app).
	Itself Scope = iota + 1
	// Children refuses the directory and each directory directly in it
	// (/home and /home/deploy); deeper ones are fine (/home/deploy/app).
	Children
	// Tree refuses the directory and everything below it.
	Tree
)

// Rule refuses Dir (absolute and clean) as Scope says. Why says what the
// directory holds, for the error.
type Rule struct {
	Dir   string
	Scope Scope
	Why   string
}

// rules is the deny list. The first rule that refuses a path gives the
// reason, so a directory comes before the one it is in. Each entry says
// why in its Why; the scope is
// the smallest that keeps the system whole: a tree where nothing below
// is a deploy path (programs, libraries, configuration, kernel file
// systems), the children where each child is shared by many (/usr/local,
// /var/lib, a user's home), the directory itself where each application
// has its own below it (/opt/app, /srv/app).
var rules = []Rule{
	{"/", Itself, "the root directory"},
	{"/bin", Tree, "the system's programs"},
	{"/sbin", Tree, "the system's programs"},
	{"/lib", Tree, "the system's libraries"},
	{"/lib32", Tree, "the system's libraries"},
	{"/lib64", Tree, "the system's libraries"},
	{"/libx32", Tree, "the system's libraries"},
	{"/boot", Tree, "the kernel and its boot loader"},
	{"/dev", Tree, "a kernel file system"},
	{"/proc", Tree, "a kernel file system"},
	{"/sys", Tree, "a kernel file system"},
	{"/run", Tree, "runtime state that a reboot clears"},
	// /etc/ssh, /etc/systemd/system, /etc/sudoers.d: an in-place
	// deployment anywhere in it moves the system's configuration away.
	{"/etc", Tree, "the system's configuration"},
	{"/home", Children, "the users' home directories"},
	{"/root", Itself, "root's home directory"},
	{"/usr/bin", Tree, "the system's programs"},
	{"/usr/sbin", Tree, "the system's programs"},
	{"/usr/lib", Tree, "the system's libraries"},
	{"/usr/lib32", Tree, "the system's libraries"},
	{"/usr/lib64", Tree, "the system's libraries"},
	{"/usr/libx32", Tree, "the system's libraries"},
	{"/usr/libexec", Tree, "the system's programs"},
	{"/usr/local/bin", Itself, "shared by the locally installed programs"},
	{"/usr/local/sbin", Itself, "shared by the locally installed programs"},
	{"/usr/local/lib", Itself, "shared by the locally installed programs"},
	{"/usr/local/etc", Itself, "shared by the locally installed programs"},
	{"/usr/local/share", Itself, "shared by the locally installed programs"},
	{"/usr", Children, "the system's programs and data"},
	{"/var", Children, "the system's variable data (/var/lib, /var/log, ...)"},
	{"/opt", Itself, "where each application has a directory of its own"},
	{"/srv", Itself, "where each service has a directory of its own"},
	{"/tmp", Itself, "temporary files shared by everyone"},
	{"/mnt", Itself, "where file systems are mounted"},
	{"/media", Itself, "where file systems are mounted"},
}

// SSHDir is the name of the directory that holds a user's SSH keys and
// authorized_keys. No deploy path may be one or lie in one, and the
// in-place layout refuses a deploy path that holds one: moving it into a
// backup locks the gateway, and everyone else, out.
const SSHDir = ".ssh"

// MaxLen bounds a deploy path, in bytes: Linux's PATH_MAX.
const MaxLen = 4096

// Rules returns the deny list, for code that applies it elsewhere.
func Rules() []Rule { return slices.Clone(rules) }

// Under reports whether p is dir or lies below it, by whole path
// elements: /srv/app is under /srv, /srvx is not. Both are cleaned first.
func Under(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// Check returns why p may not be a deploy path, nil when it may. p is
// absolute, or relative to the SSH user's home (where only the .ssh rule
// applies: the home is known on the node only). The error reads after the
// path: "must not be in /etc, the system's configuration".
func Check(p string) error {
	c := path.Clean(p)
	for _, e := range strings.Split(c, "/") {
		if e == SSHDir {
			return fmt.Errorf("must not be in an %s directory, which holds SSH keys and authorized_keys", SSHDir)
		}
	}
	if !path.IsAbs(c) {
		return nil
	}
	for _, r := range rules {
		if msg := r.refuses(c); msg != "" {
			return fmt.Errorf("%s", msg)
		}
	}
	return nil
}

// refuses returns why r refuses c (absolute and clean), "" when it does
// not.
func (r Rule) refuses(c string) string {
	switch {
	case c == r.Dir && r.Scope == Tree:
		return fmt.Sprintf("must not be %s, %s", r.Dir, r.Why)
	case c == r.Dir:
		return fmt.Sprintf("must not be %s, %s; use a directory below it", r.Dir, r.Why)
	case r.Scope == Tree && Under(c, r.Dir):
		return fmt.Sprintf("must not be in %s, %s", r.Dir, r.Why)
	case r.Scope == Children && path.Dir(c) == r.Dir:
		return fmt.Sprintf("must not be a directory directly in %s, %s; use a directory below it", r.Dir, r.Why)
	}
	return ""
}

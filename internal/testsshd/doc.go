// Package testsshd starts real OpenSSH sshd processes for tests. It is the
// only sshd launcher of the repository: a test that needs another sshd
// option extends Options instead of running sshd itself.
//
// Each server listens on its own random loopback address (127.R.x.y, never
// 127.0.0.1) so several test packages can run at once, uses a fresh ed25519
// host key, and is killed, together with every session process it forked,
// when the test ends. The server runs as the current user (root in CI), so a
// key login gets a real shell on this machine: use it only with commands and
// paths inside t.TempDir().
//
// sshd has to be told its port in its config, so Start cannot hand it a
// socket bound to port 0. It draws the port from a range below the kernel's
// ephemeral ports instead, never probing a port and releasing it for sshd
// to bind, and tries another address when sshd reports the one it got in
// use (see portMin). Options.Wrapper and Options.Dial run a server inside
// another network namespace, on an address of that namespace.
//
// It needs /usr/sbin/sshd (package openssh-server; `make test` installs it).
package testsshd

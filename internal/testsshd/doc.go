// Package testsshd starts real OpenSSH sshd processes for tests.
//
// Each server listens on its own random loopback address (127.R.x.y, never
// 127.0.0.1) so several test packages can run at once, uses a fresh ed25519
// host key, and is killed, together with every session process it forked,
// when the test ends. The server runs as the current user (root in CI), so a
// key login gets a real shell on this machine: use it only with commands and
// paths inside t.TempDir().
//
// It needs /usr/sbin/sshd (package openssh-server; `make test` installs it).
package testsshd

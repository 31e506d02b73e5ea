// Package sshexec is the SSH and SFTP client the node deployer uses to reach
// a node: it dials, verifies the host key, authenticates, keeps the
// connection alive, runs commands and uploads files.
//
// Invariants:
//
//   - Host keys are always verified, against pinned keys or OpenSSH
//     known_hosts files (including @cert-authority and @revoked lines). An
//     unknown host is refused; there is no trust on first use. A refused key
//     is reported as a *HostKeyError before any command can run.
//   - One Client is one SSH connection. Every Run, RunInput, Upload and Home
//     call opens its own channel on it, so they may run concurrently; SFTP
//     work shares one lazily started SFTP session. An Upload of a large file
//     also opens a few extra SFTP sessions for its own duration, because one
//     channel's window bounds a transfer over a long round trip.
//   - Dial retries, with jittered backoff, only what a busy or restarting
//     server causes: a refused or reset connection, or one dropped before
//     the host key was seen (sshd's MaxStartups). A refused host key or a
//     failed authentication is never retried. A DialLimiter shared by many
//     Dials bounds how many set-ups run at once.
//   - While a Client is open, a goroutine it owns sends keepalive@openssh.com
//     probes; when too many go unanswered it closes the connection so that
//     blocked calls fail instead of hanging on a dead network path. Close
//     stops it and waits for every goroutine the Client started.
//   - Passwords, private keys and agent contents never appear in logs or
//     errors.
package sshexec

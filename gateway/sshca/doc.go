// Package sshca is a gateway's SSH user certificate authority: from the
// datacenter's CA key it mints, for each node deployment, a fresh ed25519
// key pair and a short-lived OpenSSH user certificate that nodes trust
// through sshd's TrustedUserCAKeys, so that no long-lived deploy key sits
// in any node's authorized_keys.
//
// Invariants:
//
//   - The CA key is read once, from a file that only its owner may read
//     (like ssh, a key readable or writable by group or others is refused),
//     and its bytes never appear in logs or errors.
//   - Every certificate is a user certificate for exactly one principal
//     (the node's login), valid from one minute before it was issued (for
//     nodes whose clock runs behind) until a deadline bounded by
//     MaxValidity, bound to source addresses (critical option
//     source-address), and carries no extensions: no pty, no port, agent or
//     X11 forwarding, no ~/.ssh/rc.
//   - Its key id names the rollout, node, assignment and gateway, with
//     every byte outside a small safe set replaced, so that sshd's log line
//     for the login says which deployment it was and cannot be forged into
//     several lines.
//   - The ephemeral private key exists only in memory, in the Credential
//     returned for one deployment; it is never written anywhere.
package sshca

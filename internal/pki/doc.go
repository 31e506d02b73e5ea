// Package pki is Outpost's small certificate authority and the credential
// formats both sides of a connection share.
//
// The control plane owns one CA ([LoadOrCreateCA]); it signs the control
// plane's server certificate and the client certificates of people and
// gateways. A client certificate carries an [Identity] — user with a role,
// or gateway with a datacenter — in exactly one URI SAN:
//
//	outpost://user/<name>?role=<viewer|deployer|approver|admin>
//	outpost://gateway/<name>?dc=<datacenter>
//
// and the same name as its subject common name. [IdentityFromCert] parses
// it strictly: anything not in canonical form is refused, so two
// certificates cannot spell one identity two ways.
//
// Invariants:
//   - private keys are ECDSA P-256 (ours) or P-256/Ed25519 (clients');
//     serial numbers are random 128-bit;
//   - files holding a private key are written 0600, atomically, and
//     [LoadCredential] refuses one readable by group or others;
//   - no error of this package contains key material or token secrets;
//   - TLS is 1.3 only.
//
// The server certificate always carries the DNS name [ServerName], so a
// client can verify the control plane whatever address it dials (an IP, a
// load balancer, a port forward): the CA is private to one Outpost
// installation, so that name means "this installation's control plane".
package pki

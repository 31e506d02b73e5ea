// Package auditchain is the audit log's hash chain: the canonical
// encoding an entry's hash is computed over, the signed checkpoints, and
// the walk that verifies a run of entries against them. The control
// plane (controlplane/audit) uses it to write the chain and to check it
// before it signs; `outpost audit verify` uses it on what the API
// returns or on an export file, so a verifier needs nothing of the
// server but the CA certificate it already trusts.
//
// Canonical encoding, version 1 (the docs in docs/ARCHITECTURE.md, "Audit
// hash chain", are the reference; this is the implementation): a domain
// string and a NUL byte, then one record per set field of the message
// (proto3 presence: zero scalars, empty strings and bytes, unset messages
// and empty maps are left out), sorted by name bytewise. A record is
// the name's length as a 4-byte big-endian integer, the name, the
// value's length the same way, and the value. Names are the proto field
// names ("rollout_id"); a map field gives one record per key, named
// "<field>.<key>". Values: strings as their UTF-8 bytes, bytes as they
// are, integers and enums as decimal ASCII (enums by number), bools as
// "true", google.protobuf.Timestamp and Duration as
// "<seconds>.<nanos, 9 digits>". The entry's own hash field (a
// checkpoint's signature) is left out. A field added to the message
// later is thus covered as soon as it is set, and entries written before
// it keep their hash. A field of a kind the encoding does not define (a
// list, another message) is refused, so nobody can add one by accident.
//
// The encoding does not depend on protobuf's wire format, whose
// deterministic mode is not stable across library versions.
package auditchain

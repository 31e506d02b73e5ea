// Package artifactcache keeps a gateway's copy of release artifacts, keyed
// by SHA-256, so that each artifact crosses the link to the control plane
// once and is then fanned out to every node of the gateway's datacenter,
// for this rollout and later ones.
//
// Invariants:
//
//   - Only a verified artifact is ever visible: bytes are streamed into a
//     temporary file under <Dir>/tmp, checked against the size and SHA-256
//     the control plane announced (and against the digest asked for), and
//     only then renamed into <Dir>/sha256/<hex>. A short, long or corrupted
//     fetch is an error and leaves nothing behind.
//   - A digest is validated (64 lower-case hex digits) before it is used in
//     a path, so a bad digest can never name a file outside Dir.
//   - Concurrent Gets of the same digest share one fetch. Gets of a cached
//     artifact do not touch the network.
//   - A cached file is re-hashed the first time this process uses it, so a
//     file damaged on disk is fetched again instead of failing every node.
//
// One Cache owns its Dir; two processes must not share one.
package artifactcache

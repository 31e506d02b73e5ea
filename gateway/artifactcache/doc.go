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
//   - The cache is bounded: the files in <Dir>/sha256 total at most
//     MaxBytes, least recently used out first. A use is a Get (an upload)
//     or a Cached (a delta base), recorded in memory and in the file's
//     modification time, which orders the files a new process finds.
//   - An artifact in use is never evicted: Get and Cached return a Pin,
//     and only unpinned entries are evicted. When everything is pinned
//     the cache stays over MaxBytes until a Release evicts. An artifact
//     larger than MaxBytes is served all the same and evicted when its
//     last Pin is released, with a warning. A fetch in progress (in
//     <Dir>/tmp) counts from the moment its size is announced, so room is
//     made before its bytes arrive.
//   - An evicted file is renamed into <Dir>/tmp under the lock, then
//     removed; New removes what a crash left in tmp, indexes the files in
//     sha256 (ignoring names that are not digests) and trims to MaxBytes.
//
// One Cache owns its Dir; two processes must not share one.
package artifactcache

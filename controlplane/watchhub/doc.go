// Package watchhub serves WatchRollout streams from one shared view of
// each watched rollout, so that many watchers of a big rollout cost the
// control plane little more than one.
//
// Invariants the code holds to:
//
//   - One feed per rollout that has watchers on this replica: it reads the
//     rollout and its node records once, at one revision, then follows one
//     etcd watch on the rollout's keys. Every watcher of the rollout is
//     served from the feed's cache; a watcher never reads etcd.
//   - The cache keeps each node's latest record as etcd holds it (its
//     protobuf encoding) and the revision it was written at, in pages of
//     PageSize nodes. Records are never modified and a page is copied
//     before it changes, so a snapshot is a copy of the page list.
//   - Responses carry records as encoded fields (wire.go): a record is
//     encoded once, by whoever wrote it; a snapshot page in the page size
//     clients ask for, once, by the first watcher that sends it; the
//     rollout, once per version. Watchers share those bytes.
//   - A watcher holds no queue of changes: the feed marks what changed in
//     the watcher's bitset (one bit per node), and the watcher sends the
//     latest state of what is marked, oldest change first. However slow its
//     client, a watcher holds at most a bit and a 16-byte entry per node,
//     and it never holds up the feed or the other watchers.
//   - A response's revision R means that every change at or before R has
//     been sent (in its latest state), so a client resuming from R misses
//     nothing; inside a snapshot every response carries the snapshot's
//     revision, which holds once snapshot_end is sent.
//   - Watchers are capped per caller and in total; Join refuses beyond.
package watchhub

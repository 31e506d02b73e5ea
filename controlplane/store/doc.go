// Package store is the control plane's only door to etcd.
//
// It owns three things:
//
//   - the connection: [Open] either dials an external etcd cluster (over
//     TLS with a client certificate, unless told it may be insecure) or
//     starts an embedded single-node etcd in this process (the default: one
//     process, one data directory, nothing else to install), which listens
//     only on unix sockets in the data directory that no other local user
//     can reach;
//   - the key layout: every key under /outpost/ is built by one of the Key
//     helpers in keys.go, so the layout lives in one place;
//   - the write discipline: values are protobuf, and every write that
//     advances a rollout goes through [Store.Txn] or [Store.TxnIf] guarded by
//     a [Fence] (normally the leader's election key, see package
//     controlplane/leader), so a deposed leader cannot write. Unfenced
//     [Store.Put] is for data any replica may write (node inventory,
//     artifact metadata).
//
// Many small per-node state writes are coalesced by [BatchWriter].
//
// Large objects (artifacts) never go into etcd; see controlplane/artifact.
package store

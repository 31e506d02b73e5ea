// Package leader elects one control plane replica to drive rollouts.
//
// It wraps etcd's client/v3/concurrency election with the two guarantees
// the control plane relies on:
//
//   - Campaign never reports leadership held with a dead lease: it watches
//     the session while it waits and re-checks the leader key (ours, with
//     our lease, first in line) after winning.
//   - Every leader has an epoch, the create revision of its election key,
//     which grows with every new leader. A [Leadership] is a store.Fence:
//     writes guarded by it fail with store.ErrNotLeader once another
//     replica has taken over, so a deposed leader that has not yet noticed
//     cannot write.
//
// Done is the signal to stop leader-only work; the fence is the guarantee.
package leader

// Package rollout is the rollout engine: it drives every running rollout
// through its stages and batches, hands node deployments to the gateways of
// each node's datacenter, and applies what the gateways report back.
//
// The engine runs only on the leader. The control plane starts one Engine
// per leadership term (see controlplane's leader loop) and stops it when
// leadership ends; a new term loads every unfinished rollout from etcd and
// continues where the previous term stopped, without deploying finished
// nodes again. Every write that advances a rollout is fenced with the
// term's leadership, so a deposed leader cannot write.
//
// Invariants:
//
//   - One goroutine (the loop in Run) owns all rollout state; gateway
//     streams and API calls talk to it through closures on a channel.
//   - A node is recorded RUNNING with its assignment id in etcd before the
//     assignment is sent, so a restarted leader knows every assignment a
//     gateway may still be running.
//   - Node states are written through a store.BatchWriter; a rollout's own
//     record is written after the node records it summarizes, so a watcher
//     that sees a terminal rollout has already seen every node change.
//   - A rollout becomes terminal only when no node of it is still running:
//     after an abort, running nodes finish (or roll back) first and pending
//     nodes become SKIPPED.
//   - A stage's failure budget counts FAILED, ROLLED_BACK and
//     ROLLBACK_FAILED nodes over the whole stage; the rollout aborts when
//     failed*100 > max_fail_percent*nodes, i.e. "more than" the budget.
package rollout

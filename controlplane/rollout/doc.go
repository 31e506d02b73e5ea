// Package rollout is the rollout engine: it drives every running rollout
// through its stages and batches, hands node work to the gateways of each
// node's datacenter, and applies what the gateways report back.
//
// The engine runs only on the leader. The control plane starts one Engine
// per leadership term (see controlplane's leader loop) and stops it when
// leadership ends; a new term loads every unfinished rollout from etcd and
// continues where the previous term stopped, without deploying finished
// nodes again. Every write that advances a rollout is fenced with the
// term's leadership, so a deposed leader cannot write.
//
// Files, by what they decide:
//
//   - engine.go: Config, the loop (Run), commit: what is written when.
//   - load.go: which rollouts a term drives (loadAll, onRevisionEvent, adopt).
//   - advance.go: how a rollout moves (advance, mayStart, start, finish,
//     abort, skipRest).
//   - schedule.go: which gateway gets which node (dispatch, pickGateway,
//     assign).
//   - results.go: what a gateway's report changes (onAck, onStep,
//     onResult, requeue, failNode).
//   - budget.go: the failure budget (checkBudget, OverBudget).
//   - rollback.go: rollbacks the engine orders and how a stopped rollout
//     ends (queueRollbacks, applyAuxResult, failState).
//   - desired.go: the release a node's result leaves current there, written
//     with the result.
//   - bake.go, bluegreen.go: bakes and traffic switches.
//   - analysis.go: canary analysis during a bake (measurements off the
//     loop, recorded with the stage, verdicts that roll back or pause).
//   - gateways.go: which gateways are connected (ServeGateway, register,
//     detach) and the Link the engine sends through.
//   - control.go: the verbs (Abort, Pause, Approve, …).
//   - state.go, trace.go, metrics.go: the in-memory records, spans, metrics.
//
// Its tests run the engine alone (harness_test.go): a real embedded etcd, a
// real leadership as the fence, a fake clock (internal/clock/clocktest)
// and gateways connected in memory through gatewaylink
// (memgateway_test.go), so timeouts are tested by moving the clock.
//
// Invariants:
//
//   - One goroutine (the loop in Run) owns all rollout state; gateway
//     streams and API calls talk to it through closures on a channel.
//   - The engine holds no gateway stream. It reaches a gateway only
//     through Link (assign, cancel, ack, close), which
//     controlplane/gatewaylink implements without blocking; gatewaylink
//     serves the stream and hands each message to the loop. What a
//     gateway runs and how much more it takes (session.active, checks,
//     free) is engine state, owned by the loop, so scheduling never asks
//     the session layer.
//   - A node is recorded RUNNING with its assignment id in etcd before the
//     assignment is sent, so a restarted leader knows every assignment a
//     gateway may still be running. Rollbacks and traffic switches are
//     node assignments like deployments (AssignmentKind ROLLBACK,
//     RUN_HOOK); only bake health checks are not recorded (a new term
//     starts a new round).
//   - A running node's progress alone (step, phase, event sequence) is
//     written at most every progressInterval and when leadership ends; a
//     gateway's ack of a step event means applied, not yet written, so a
//     new leader may show a running node a few steps behind. Every state
//     change is written before it is acknowledged or acted on.
//   - Node states are written through a store.BatchWriter; a rollout's own
//     record is written after the node records it summarizes, so a watcher
//     that sees a terminal rollout has already seen every node change. The
//     OnRolloutState and OnNodeResult hooks are called after both are
//     durable.
//   - A node record whose result changes the release Outpost activated on
//     the node (succeeded, rolled back) is written in one fenced
//     transaction with that desired release (desired.go), not through the
//     batch: fleet truth never sees a result without its release, or the
//     reverse, whenever leadership is lost.
//   - A rollout becomes terminal only when no node of it is still running
//     and no rollback waits.
//   - Rollouts of one app run one at a time, in creation order: a later
//     one waits in APPROVED ("waiting for rollout X of app to end"). A
//     rollout in PENDING_VALIDATION does not hold the app.
//
// Semantics people rely on (documented for the CLI too):
//
//   - Failure budget: a stage's FAILED, ROLLED_BACK and ROLLBACK_FAILED
//     nodes are counted over the whole stage, not per batch; the rollout
//     aborts when failed*100 > max_fail_percent*nodes, "more than" the
//     budget: 10 nodes at 10% continue with 1 failure and abort with 2.
//     The tiered preset's tier 1 allows none.
//   - Abort (verb or budget): no new node starts, pending nodes become
//     SKIPPED at once, nodes in flight finish (or roll back), queued
//     rollbacks still run; then ABORTED. Nodes deployed keep the release.
//   - Pause: RUNNING -> PAUSED, nothing new starts, running nodes finish,
//     bake rounds stop (the bake's end, in etcd, keeps running). PAUSED and
//     a stage WAITING_PROMOTION are in etcd and survive restarts. A stage
//     with pause: manual ends WAITING_PROMOTION with the rollout PAUSED;
//     Promote moves on (Resume is refused there); Promote on a BAKING
//     stage ends the bake.
//   - Bake (bake.go): health re-checked every health interval until the
//     bake ends; one unhealthy answer fails the stage, its nodes are rolled
//     back to their previous release, later nodes are skipped, and the
//     rollout ends FAILED_ROLLED_BACK (ABORTED when a rollback failed or
//     nodes of earlier stages keep the new release).
//   - Blue/green (bluegreen.go): a failed traffic switch runs the
//     switch-back hook; the rollout ends FAILED_ROLLED_BACK.
//   - Retry: the failed nodes of a SUCCEEDED, ABORTED or
//     FAILED_ROLLED_BACK rollout run again, and only they; only the app's
//     newest rollout, while no other of the app runs.
//   - Approval: four eyes (the approver is not the requester; two
//     anonymous callers count as the same person) unless
//     Config.SelfApproval (AllowSelfApproval, or the rollout's environment
//     in SelfApprovalEnvironments). An approval not used within ApprovalTTL (the
//     rollout waited for an earlier one) expires: back to
//     PENDING_APPROVAL, approver cleared, to be approved again.
//   - Validation: accept -> VALIDATED; reject -> an undo rollout (a new
//     revision returning the app to its previous revision, approved by the
//     rejecter) is created and the rollout ends REJECTED, its message
//     naming the undo.
package rollout

package rolloutstate

import (
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The rollout state machine (see RolloutState in rollout.proto):
//
//	PENDING_APPROVAL -> APPROVED -> RUNNING <-> PAUSED -> SUCCEEDED
//	  or PENDING_VALIDATION -> VALIDATED or REJECTED
//	failures: ABORTED, FAILED_ROLLED_BACK, REJECTED
//
// Every known state but UNSPECIFIED is exactly one of: Active (the engine
// drives it), waiting for a person (PENDING_APPROVAL, PENDING_VALIDATION),
// or Terminal.

// Active reports whether the engine drives a rollout in state s: it
// starts nodes, or waits for running ones (APPROVED, RUNNING, PAUSED).
// The engine keeps exactly these rollouts in memory and loads them when
// it becomes leader; the others change only through a verb.
func Active(s outpostv1.RolloutState) bool {
	switch s {
	case outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
		outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
		outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:
		return true
	}
	return false
}

// Terminal reports whether a rollout in state s has ended for good:
// SUCCEEDED, VALIDATED, ABORTED, FAILED_ROLLED_BACK or REJECTED.
// (RetryRollout may still run the failed nodes of a SUCCEEDED, ABORTED or
// FAILED_ROLLED_BACK rollout again, as a new run of the same rollout.)
//
// PENDING_VALIDATION is not terminal: a person accepts it (VALIDATED) or
// rejects it (REJECTED, rolled back). So WatchRollout keeps its stream
// open there to show that decision, the engine counts a rollout as
// finished in its metrics only once it is terminal, and the audit log
// marks and reconciles only terminal ends. Use Finished for "nothing
// more happens without a person".
func Terminal(s outpostv1.RolloutState) bool {
	switch s {
	case outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED,
		outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
		outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK,
		outpostv1.RolloutState_ROLLOUT_STATE_REJECTED:
		return true
	}
	return false
}

// Finished reports whether the deployment of a rollout in state s is
// over: it is Terminal, or PENDING_VALIDATION, where no node changes
// until a person decides. `outpost rollout watch` returns here (its
// help promises to return once the rollout is deployed and waits for
// validation; the server keeps the stream open, see Terminal), `rollout
// get` stops showing it as running, AbortRollout refuses it, an undo
// does not count it as the app's running rollout, and tests wait for it.
func Finished(s outpostv1.RolloutState) bool {
	return Terminal(s) || s == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
}

// Deployed reports whether a rollout in state s put its release on its
// nodes: SUCCEEDED, PENDING_VALIDATION or VALIDATED. It is what success
// means: the watch exits 0 only then, an undo returns only to such a
// revision, and the engine ends the rollout's trace with an OK status.
func Deployed(s outpostv1.RolloutState) bool {
	switch s {
	case outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION,
		outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED:
		return true
	}
	return false
}

// NodeFinal reports whether a node in state s is done with its rollout
// (until a retry): SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED or
// SKIPPED. These are the results the engine reports and the audit log
// records, and a batch is over when all its nodes are final.
func NodeFinal(s outpostv1.NodeState) bool {
	switch s {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED,
		outpostv1.NodeState_NODE_STATE_SKIPPED:
		return true
	}
	return NodeFailed(s)
}

// NodeFailed reports whether a node in state s failed: FAILED (before the
// switch), ROLLED_BACK, or ROLLBACK_FAILED. These count against a
// stage's failure budget.
func NodeFailed(s outpostv1.NodeState) bool {
	switch s {
	case outpostv1.NodeState_NODE_STATE_FAILED,
		outpostv1.NodeState_NODE_STATE_ROLLED_BACK,
		outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		return true
	}
	return false
}

// Prefixes of the enum value names.
const (
	rolloutPrefix = "ROLLOUT_STATE_"
	stagePrefix   = "STAGE_STATE_"
	nodePrefix    = "NODE_STATE_"
)

// Name is the rollout state's name without its prefix ("RUNNING"), as
// people read it in messages, logs and notifications (metric labels use
// internal/telemetry's lower-case spelling). An unknown value is its
// number.
func Name(s outpostv1.RolloutState) string {
	return strings.TrimPrefix(s.String(), rolloutPrefix)
}

// ParseName returns the rollout state Name gave name, and false when no
// state has that name.
func ParseName(name string) (outpostv1.RolloutState, bool) {
	v, ok := outpostv1.RolloutState_value[rolloutPrefix+name]
	return outpostv1.RolloutState(v), ok
}

// StageName is the stage state's name without its prefix ("BAKING").
func StageName(s outpostv1.StageState) string {
	return strings.TrimPrefix(s.String(), stagePrefix)
}

// NodeName is the node state's name without its prefix ("ROLLED_BACK").
func NodeName(s outpostv1.NodeState) string {
	return strings.TrimPrefix(s.String(), nodePrefix)
}

package audit

import (
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The markers (store.AuditNodeMarkerKey, store.AuditRolloutStateMarkerKey)
// are one small key per node result entry and per entry of a rollout
// reaching a terminal state, written in the same transaction as the
// entry, so "is this result in the log?" is one key lookup (and a whole
// rollout one range read) instead of a scan of the log. Reconcile relies
// on them.

// NodeResultMarkerKey returns the marker of the entry recording that the
// node reached state under that assignment ("" when it had none). A node
// reaches a final state once per assignment and state: a retry or a
// rollback runs a new assignment.
func NodeResultMarkerKey(rolloutID, nodeID string, state outpostv1.NodeState, assignmentID string) string {
	return store.AuditNodeMarkerKey(rolloutID, nodeID, rolloutstate.NodeName(state), assignmentID)
}

// RolloutStateMarkerKey returns the marker of the entry recording that the
// rollout reached the terminal state. A rollout that reaches the same
// terminal state twice (RetryRollout of a SUCCEEDED rollout) shares one
// marker: Reconcile cannot tell the second entry is missing when the
// first is there.
func RolloutStateMarkerKey(rolloutID string, state outpostv1.RolloutState) string {
	return store.AuditRolloutStateMarkerKey(rolloutID, stateName(state))
}

// markerKey returns the marker written with e, or "" when e has none:
// only node results and rollouts reaching a terminal state are marked,
// and only when their ids can be key segments. It reads only what the
// stored entry holds, so the janitor finds the marker of an entry it
// deletes.
func markerKey(e *outpostv1.AuditEntry) string {
	rid := e.GetRolloutId()
	if store.CheckID(rid) != nil {
		return ""
	}
	switch e.GetAction() {
	case ActionNodeResult:
		nid, st, aid := e.GetNodeId(), e.GetDetails()["state"], e.GetDetails()["assignment"]
		if store.CheckID(nid) != nil || store.CheckID(st) != nil || (aid != "" && store.CheckID(aid) != nil) {
			return ""
		}
		return store.AuditNodeMarkerKey(rid, nid, st, aid)
	case ActionRolloutState:
		to, ok := rolloutstate.ParseName(e.GetDetails()["to"])
		if !ok || !rolloutstate.Terminal(to) {
			return ""
		}
		return RolloutStateMarkerKey(rid, to)
	}
	return ""
}

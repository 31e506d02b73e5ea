package audit

import (
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// IndexPrefix is the root of the markers: one small key per node result
// entry and per entry of a rollout reaching a terminal state, written in
// the same transaction as the entry, so "is this result in the log?" is
// one key lookup (and a whole rollout one range read) instead of a scan
// of the log. Reconcile relies on them.
const IndexPrefix = store.Root + "auditidx/"

// noAssignment stands for an empty assignment id in a marker key: a node
// skipped before it was ever assigned. Assignment ids are
// "<rollout>-<node>-e<epoch>-<n>", never "-".
const noAssignment = "-"

// IndexRolloutPrefix returns /outpost/auditidx/<rollout-id>/, the prefix
// of every marker of the rollout.
func IndexRolloutPrefix(rolloutID string) string { return IndexPrefix + rolloutID + "/" }

// NodeResultMarkerKey returns
// /outpost/auditidx/<rollout-id>/nodes/<node-id>/<STATE>/<assignment-id>,
// the marker of the entry recording that the node reached state under
// that assignment ("" when it had none). A node reaches a final state once
// per assignment and state: a retry or a rollback runs a new assignment.
func NodeResultMarkerKey(rolloutID, nodeID string, state outpostv1.NodeState, assignmentID string) string {
	return nodeMarkerKey(rolloutID, nodeID, rolloutstate.NodeName(state), assignmentID)
}

func nodeMarkerKey(rolloutID, nodeID, stateName, assignmentID string) string {
	if assignmentID == "" {
		assignmentID = noAssignment
	}
	return IndexRolloutPrefix(rolloutID) + "nodes/" + nodeID + "/" + stateName + "/" + assignmentID
}

// RolloutStateMarkerKey returns /outpost/auditidx/<rollout-id>/state/<STATE>,
// the marker of the entry recording that the rollout reached the terminal
// state. A rollout that reaches the same terminal state twice (RetryRollout
// of a SUCCEEDED rollout) shares one marker: Reconcile cannot tell the
// second entry is missing when the first is there.
func RolloutStateMarkerKey(rolloutID string, state outpostv1.RolloutState) string {
	return IndexRolloutPrefix(rolloutID) + "state/" + stateName(state)
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
		return nodeMarkerKey(rid, nid, st, aid)
	case ActionRolloutState:
		to, ok := rolloutstate.ParseName(e.GetDetails()["to"])
		if !ok || !rolloutstate.Terminal(to) {
			return ""
		}
		return RolloutStateMarkerKey(rid, to)
	}
	return ""
}

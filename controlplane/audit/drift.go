package audit

import (
	"context"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// ActionNodeDrift is the action of an entry recording drift first seen on
// a node (controlplane/fleet.go): once per drift kind, not per
// observation.
const ActionNodeDrift = "node.drift"

// RecordNodeDrift records that kinds were first seen on node, with the
// status they were seen in. It waits while the queue is full, bounded by
// ctx (see enqueueRecord).
func (l *Log) RecordNodeDrift(ctx context.Context, node string, kinds []outpostv1.DriftKind, st *outpostv1.NodeStatus) {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = strings.ToLower(strings.TrimPrefix(k.String(), "DRIFT_KIND_"))
	}
	o := st.GetObservation()
	e := &outpostv1.AuditEntry{
		Actor:     l.cfg.ReplicaName,
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM,
		Action:    ActionNodeDrift,
		Resource:  "nodes/" + node,
		NodeId:    node,
		Result:    ResultOK,
		Message:   strings.Join(names, ","),
	}
	detail(e, "desired", st.GetDesired().GetRelease())
	detail(e, "observed", o.GetRelease())
	detail(e, "gateway", o.GetGateway())
	detail(e, "error", o.GetError())
	l.enqueueRecord(ctx, e)
}

package audit

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Actions of the entries the control plane makes itself; API calls use
// the full gRPC method name.
const (
	// ActionNodeStep: a step ended on a node (succeeded or failed).
	// Written by versions before the steps were folded into the node's
	// result entry (detail "steps"); kept to read their entries.
	ActionNodeStep = "node.step"
	// ActionNodeResult: a node reached its final state in a rollout.
	ActionNodeResult = "node.result"
	// ActionRolloutState: a rollout changed state.
	ActionRolloutState = "rollout.state"
)

// Results of node entries.
const (
	ResultOK     = "OK"
	ResultFailed = "FAILED"
)

// RecordNodeStep notes that a step ended on a node, as gateway reported
// in ev; the step goes into the node's result entry (see fold.go), not
// an entry of its own. Events of steps starting are ignored.
func (l *Log) RecordNodeStep(_ context.Context, _ string, ev *outpostv1.NodeStepEvent) {
	if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_STARTED || ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED {
		return
	}
	l.steps.add(ev.GetRolloutId(), ev.GetNodeId(), stepSummary(ev))
}

// RecordNodeResult records a node's final state in a rollout: state is
// SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED or SKIPPED, step the last
// step that ran (the failed one), errText the node's error ("" on
// success), gateway the gateway that ran it ("" when none did). It waits
// while the queue is full, bounded by ctx (see enqueueRecord); ctx also
// contributes its trace id.
func (l *Log) RecordNodeResult(ctx context.Context, rolloutID, nodeID string, state outpostv1.NodeState, step outpostv1.Step, errText, gateway string) {
	l.enqueueRecord(ctx, l.foldSteps(l.nodeResultEntry(rolloutID, nodeID, state, step, errText, gateway, "")))
}

// foldSteps moves the node's finished steps into its result entry e.
func (l *Log) foldSteps(e *outpostv1.AuditEntry) *outpostv1.AuditEntry {
	steps, dropped := l.steps.take(e.GetRolloutId(), e.GetNodeId())
	detail(e, stepsDetail, steps)
	if dropped {
		detail(e, "steps_dropped", "true")
	}
	return e
}

// nodeResultEntry is the entry of RecordNodeResult; assignmentID, when
// set, names the assignment that ended in state (detail "assignment"),
// which tells the results of a retried node apart.
func (l *Log) nodeResultEntry(rolloutID, nodeID string, state outpostv1.NodeState, step outpostv1.Step, errText, gateway, assignmentID string) *outpostv1.AuditEntry {
	e := l.nodeEntry(gateway, rolloutID, nodeID)
	e.Action = ActionNodeResult
	name := rolloutstate.NodeName(state)
	e.Result = ResultFailed
	switch state {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.NodeState_NODE_STATE_SKIPPED:
		e.Result = ResultOK
	}
	e.Message = name
	if errText != "" {
		e.Message += ": " + errText
	}
	detail(e, "state", name)
	if step != outpostv1.Step_STEP_UNSPECIFIED {
		detail(e, "step", stepName(step))
	}
	detail(e, "assignment", assignmentID)
	return e
}

// RecordRolloutNode is RecordNodeResult for a node's record, in the shape
// of the rollout engine's OnNodeResult hook; the entry also names the
// node's assignment (detail "assignment") and the node deployment's trace
// (detail "trace_id", instead of ctx's).
func (l *Log) RecordRolloutNode(ctx context.Context, rolloutID string, n *outpostv1.RolloutNode) {
	l.enqueueRecord(ctx, l.foldSteps(l.rolloutNodeEntry(rolloutID, n)))
}

func (l *Log) rolloutNodeEntry(rolloutID string, n *outpostv1.RolloutNode) *outpostv1.AuditEntry {
	e := l.nodeResultEntry(rolloutID, n.GetNodeId(), n.GetState(), n.GetStep(), n.GetError(), n.GetGateway(), n.GetAssignmentId())
	// The node deployment's own trace, where its spans are.
	detail(e, "trace_id", n.GetTraceId())
	return e
}

// RecordRolloutState records that rollout r changed from state from to
// state to; reason says why ("" when the states say it all). The actor is
// this control plane (Config.ReplicaName): people's verbs are recorded
// separately by the interceptors. It waits while the queue is full,
// bounded by ctx (see enqueueRecord); ctx also contributes its trace id.
func (l *Log) RecordRolloutState(ctx context.Context, r *outpostv1.Rollout, from, to outpostv1.RolloutState, reason string) {
	fromName := stateName(from)
	if fromName == "" {
		fromName = "NEW"
	}
	if rolloutstate.Terminal(to) {
		l.steps.forget(r.GetId())
	}
	l.enqueueRecord(ctx, l.rolloutStateEntry(r, fromName, to, reason))
}

// rolloutStateEntry is the entry of RecordRolloutState from the state
// named fromName ("" when not known).
func (l *Log) rolloutStateEntry(r *outpostv1.Rollout, fromName string, to outpostv1.RolloutState, reason string) *outpostv1.AuditEntry {
	e := &outpostv1.AuditEntry{
		Actor:     l.cfg.ReplicaName,
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM,
		Action:    ActionRolloutState,
		Result:    ResultOK,
	}
	setRollout(e, r.GetId())
	toName := stateName(to)
	e.Message = toName
	if fromName != "" {
		e.Message = fromName + " -> " + toName
	}
	if reason != "" {
		e.Message += ": " + reason
	}
	detail(e, "from", fromName)
	detail(e, "to", toName)
	detail(e, "app", r.GetApp())
	detail(e, "environment", r.GetPlan().GetEnvironment())
	detail(e, "change_id", r.GetPlan().GetChangeId())
	if r.GetRevision() != 0 {
		detail(e, "revision", strconv.FormatInt(r.GetRevision(), 10))
	}
	detail(e, "release", r.GetReleaseId())
	return e
}

// nodeEntry starts an entry about a node: the gateway that ran it is the
// actor, or this control plane when no gateway did.
func (l *Log) nodeEntry(gateway, rolloutID, nodeID string) *outpostv1.AuditEntry {
	e := &outpostv1.AuditEntry{
		Actor:     gateway,
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY,
		RolloutId: rolloutID,
		NodeId:    nodeID,
	}
	if gateway == "" {
		e.Actor, e.ActorKind = l.cfg.ReplicaName, outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM
	}
	if nodeID != "" {
		e.Resource = "nodes/" + nodeID
	}
	detail(e, "gateway", gateway)
	return e
}

// enqueueRecord queues an entry the rollout engine reports, waiting while
// the queue is full (see Enqueue). The engine's context ends with its
// leadership term (or the control plane's shutdown), so a stuck etcd
// cannot hold the engine past it. An entry not queued then is logged as
// an error, rate-limited: the next term's Reconcile records the node
// results and final rollout states among them (markers tell what is
// missing); step results and other state changes are lost.
func (l *Log) enqueueRecord(ctx context.Context, e *outpostv1.AuditEntry) {
	addTraceID(ctx, e)
	err := l.Enqueue(ctx, e)
	if err == nil {
		return
	}
	l.mu.Lock()
	l.lost++
	l.lostSince++
	now := time.Now()
	report := now.Sub(l.lastLost) >= lostLogEvery
	total, since := l.lost, l.lostSince
	if report {
		l.lastLost, l.lostSince = now, 0
	}
	l.mu.Unlock()
	if report {
		// Not the message: it is scrubbed only on its way into the log.
		l.log.Error("audit entry not recorded", "err", err, "action", e.GetAction(), "rollout", e.GetRolloutId(),
			"node", e.GetNodeId(), "not_recorded", since, "not_recorded_total", total,
			"recovery", "the next leadership term records node results and final rollout states")
	}
}

// stepName is a step without its prefix, lower case ("health").
func stepName(s outpostv1.Step) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_"))
}

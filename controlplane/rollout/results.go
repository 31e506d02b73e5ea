package rollout

import (
	"context"
	"fmt"
	"strings"

	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
)

// onGatewayMessage applies one message from a gateway. Duplicates (a
// gateway re-sending after a reconnect) are recognized by assignment id
// and per-node event sequence and ignored.
func (e *Engine) onGatewayMessage(ctx context.Context, s *session, m *outpostv1.ConnectRequest) {
	switch x := m.GetMsg().(type) {
	case *outpostv1.ConnectRequest_Heartbeat:
	case *outpostv1.ConnectRequest_AssignmentAck:
		e.onAck(s, x.AssignmentAck)
	case *outpostv1.ConnectRequest_StepEvent:
		e.onStep(ctx, x.StepEvent)
	case *outpostv1.ConnectRequest_NodeResult:
		e.onResult(x.NodeResult)
	case *outpostv1.ConnectRequest_Hello:
		e.log.Warn("gateway sent a second hello; ignored", "gateway", s.name)
	}
	if seq := m.GetSequence(); seq > 0 {
		if len(e.ackPending) == 0 {
			e.ackSince = e.cfg.Clock.Now()
		}
		e.ackPending[s.name] = max(e.ackPending[s.name], seq)
	}
}

// current returns the node whose current assignment is id, or nil.
func (e *Engine) current(id string) *nodeRun {
	n := e.assignments[id]
	if n == nil || n.rn.GetAssignmentId() != id || n.rn.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING {
		return nil
	}
	return n
}

func (e *Engine) onAck(s *session, a *outpostv1.AssignmentAck) {
	if a.GetAccepted() {
		if n := e.current(a.GetAssignmentId()); n != nil {
			n.refusals = 0
		}
		return
	}
	n := e.current(a.GetAssignmentId())
	if n == nil {
		return
	}
	s.refusedUntil = e.cfg.Clock.Now().Add(e.cfg.RefuseBackoff)
	why := "refused by gateway " + s.name + ": " + a.GetReason()
	e.log.Info("gateway refused an assignment", "gateway", s.name, "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "reason", a.GetReason(), "refusals", n.refusals+1)
	e.requeue(n, why, false)
	// A refusal that keeps coming back is not going away (an invalid
	// assignment); fail the node instead of offering it forever.
	if n.refusals++; n.refusals >= maxRefusals && n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
		e.failNode(n, why)
	}
}

func (e *Engine) onStep(ctx context.Context, se *outpostv1.AssignmentStepEvent) {
	n := e.current(se.GetAssignmentId())
	ev := se.GetEvent()
	if n == nil || ev == nil {
		return
	}
	if ev.GetSeq() != 0 && ev.GetSeq() <= n.rn.GetLastEventSeq() {
		return
	}
	n.rn.Step = ev.GetStep()
	n.rn.StepPhase = ev.GetPhase()
	if ev.GetSeq() != 0 {
		n.rn.LastEventSeq = ev.GetSeq()
	}
	// Progress alone is written lazily (see progressInterval); the ack
	// of this event covers it once applied here.
	e.progressed[n] = struct{}{}
	stepName := strings.TrimPrefix(ev.GetStep().String(), "STEP_")
	if m := e.cfg.Metrics; m != nil {
		m.Node.ObserveStep(ev)
	}
	if n.span != nil {
		n.span.AddEvent(stepName + " " + strings.ToLower(strings.TrimPrefix(ev.GetPhase().String(), "STEP_PHASE_")))
	}
	if e.cfg.Events != nil {
		out := proto.CloneOf(ev)
		out.NodeId, out.RolloutId = n.id(), n.run.id()
		e.cfg.Events.Publish(ctx, n.run.id(), n.rn.GetGateway(), out)
	}
}

func (e *Engine) onResult(res *outpostv1.NodeResult) {
	if c := e.checks[res.GetAssignmentId()]; c != nil {
		e.onCheckResult(c, res)
		return
	}
	n := e.current(res.GetAssignmentId())
	if n == nil {
		e.log.Debug("result for an unknown or finished assignment; ignored", "assignment", res.GetAssignmentId())
		return
	}
	state := res.GetState()
	errMsg := res.GetError()
	switch state {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED:
	case outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.NodeState_NODE_STATE_ROLLED_BACK, outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		if errMsg == "" {
			errMsg = "deployment " + strings.ToLower(rolloutstate.NodeName(state))
		}
	default:
		errMsg = fmt.Sprintf("gateway reported %s as a result: %s", state, errMsg)
		state = outpostv1.NodeState_NODE_STATE_FAILED
	}
	e.unbind(n)
	delete(e.assignments, res.GetAssignmentId())
	delete(e.orphans, n)
	if res.GetStep() != outpostv1.Step_STEP_UNSPECIFIED {
		n.rn.Step = res.GetStep()
	}
	switch n.kind() {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK, outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK:
		if n.rn.GetRollingBack() || n.isSwitch() {
			state, errMsg = e.applyAuxResult(n, state, errMsg, res)
		} else {
			n.rn.State, n.rn.Error = state, errMsg
		}
	default:
		n.rn.State = state
		n.rn.Error = errMsg
		n.rn.PreviousRelease = res.GetPreviousRelease()
	}
	e.markNode(n)
	endNodeSpan(n, errMsg)
	e.observeNode(n, state)
	lvl := "node finished"
	if state != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		e.log.Warn(lvl, "rollout", n.run.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "state", rolloutstate.NodeName(state), "step", res.GetStep().String(), "err", errMsg)
	} else {
		e.log.Debug(lvl, "rollout", n.run.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "state", rolloutstate.NodeName(state))
	}
	if n.rn.GetRollingBack() || n.isSwitch() {
		return // no budget: a switch failure and rollbacks end the rollout by themselves
	}
	e.checkBudget(n.run, n.stage)
}

func (e *Engine) unbind(n *nodeRun) {
	if n.sess != nil {
		delete(n.sess.active, n.rn.GetAssignmentId())
		n.sess = nil
	}
}

// requeue takes a running node off its gateway. In a running rollout it
// goes back to PENDING and is assigned again; in an aborting rollout it
// does not start again: SKIPPED if it never started, else FAILED because
// its outcome is unknown.
func (e *Engine) requeue(n *nodeRun, why string, started bool) {
	if started {
		// Its gateway may have died holding the node's lock: the next
		// assignment may take that lock over, and only that one.
		n.takeover = n.rn.GetAssignmentId()
	}
	e.unbind(n)
	delete(e.assignments, n.rn.GetAssignmentId())
	delete(e.orphans, n)
	endNodeSpan(n, "re-queued: "+why)
	e.markNode(n)
	if n.rn.GetRollingBack() {
		// Rollbacks run whatever the rollout does; the next one takes it.
		n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
		n.rn.AssignmentId = ""
		n.rn.Gateway = ""
		return
	}
	if n.run.aborting() {
		if started {
			n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
			n.rn.Error = "deployment interrupted (" + why + "); the node's state is unknown"
		} else {
			n.rn.State = outpostv1.NodeState_NODE_STATE_SKIPPED
		}
		return
	}
	n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
	n.rn.AssignmentId = ""
	n.rn.Gateway = ""
	n.rn.Step = outpostv1.Step_STEP_UNSPECIFIED
	n.rn.StepPhase = outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED
	n.rn.Error = ""
}

// failNode ends a node that could not be deployed (or, when rolling back,
// rolled back) at all.
func (e *Engine) failNode(n *nodeRun, msg string) {
	n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
	if n.rn.GetRollingBack() {
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED
	}
	n.rn.Error = msg
	n.rn.WaitingForGateway = false
	e.markNode(n)
	e.log.Warn("node failed", "rollout", n.run.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "err", msg)
	e.observeNode(n, n.rn.GetState())
	e.checkBudget(n.run, n.stage)
}

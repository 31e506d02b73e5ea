package rollout

import (
	"strings"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// queueRollbacks marks the succeeded nodes among ns for rollback (PENDING
// with rolling_back; dispatch sends ROLLBACK assignments) and returns how
// many.
func (e *Engine) queueRollbacks(r *run, ns []*nodeRun, why string) int {
	count := 0
	for _, n := range ns {
		if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || n.rn.GetRollingBack() {
			continue
		}
		n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
		n.rn.RollingBack = true
		n.rn.Error = why
		n.rn.AssignmentId = ""
		e.markNode(n)
		count++
	}
	return count
}

// applyAuxResult records the outcome of a rollback or a traffic switch
// hook and returns the node's new state and error.
func (e *Engine) applyAuxResult(n *nodeRun, state outpostv1.NodeState, errMsg string, res *outpostv1.NodeResult) (outpostv1.NodeState, string) {
	r := n.run
	ok := state == outpostv1.NodeState_NODE_STATE_SUCCEEDED
	switch {
	case n.rn.GetRollingBack() && ok:
		to := "its previous release " + n.rn.GetPreviousRelease()
		why := n.rn.GetError()
		if n.isSwitch() {
			to = "traffic to " + colorOr(r.r.GetBlueGreen().GetLiveColor(), "the previous color")
			// switchFailed put this suffix on; a bake's reason keeps its words.
			why = strings.TrimSuffix(why, "; rolling back")
		} else if n.rn.GetPreviousRelease() == "" {
			to = "no release (it had none before)"
		}
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLED_BACK
		n.rn.Error = why + "; rolled back to " + to
	case n.rn.GetRollingBack():
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED
		n.rn.Error = n.rn.GetError() + "; ROLLBACK FAILED: " + errMsg
		e.log.Error("ROLLBACK FAILED: node needs attention", "rollout", r.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "err", errMsg)
	case ok: // the traffic switch
		n.rn.State, n.rn.Error = outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	default: // the traffic switch failed
		e.switchFailed(n, errMsg)
	}
	_ = res
	return n.rn.GetState(), n.rn.GetError()
}

// failState is how a stopped rollout ends: FAILED_ROLLED_BACK when the
// engine rolled nodes back (a failed bake or traffic switch), all of them
// made it, and no node of the rollout is left on the new release (a
// blue/green rollout's idle color does not count: it serves no traffic);
// else ABORTED.
func failState(r *run) outpostv1.RolloutState {
	wave, left := false, 0
	for _, n := range r.order {
		st := n.rn.GetState()
		if n.rn.GetRollingBack() {
			wave = true
			if st == outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED {
				return outpostv1.RolloutState_ROLLOUT_STATE_ABORTED
			}
		}
		if st == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			left++
		}
	}
	switch {
	case !wave:
		return outpostv1.RolloutState_ROLLOUT_STATE_ABORTED
	case r.r.GetBlueGreen() != nil, left == 0:
		return outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK
	}
	return outpostv1.RolloutState_ROLLOUT_STATE_ABORTED
}

package rollout

import (
	"fmt"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Blue/green: the planner puts the idle color's nodes in a deploy stage
// and the switch node alone in a last stage of kind SWITCH. That stage's
// assignment is a RUN_HOOK of strategy.switch_hook on the switch node,
// with OUTPOST_COLOR set to the color that gets the traffic and
// OUTPOST_PREVIOUS_COLOR to the one that had it. When the hook fails, the
// engine switches traffic back: the same node runs switch_back_hook (or
// switch_hook, with the colors the other way round) and the rollout ends
// FAILED_ROLLED_BACK, or ABORTED when that fails too. The old color is
// never touched, so switching back needs no deployment. An undo whose
// release the other color still holds is a rollout with only the switch
// stage (BlueGreen.switch_back): it runs the switch-back hook.

// switchHook returns the hook and environment of r's traffic switch;
// back means switching traffic back after a failed switch.
func switchHook(r *run, back bool) (string, map[string]string) {
	bg := r.r.GetBlueGreen()
	strat := r.r.GetPlan().GetStrategy()
	to, from := bg.GetTargetColor(), bg.GetLiveColor()
	hook := strat.GetSwitchHook()
	if bg.GetSwitchBack() != back {
		if h := strat.GetSwitchBackHook(); h != "" {
			hook = h
		}
	}
	if back {
		to, from = from, to
	}
	return hook, map[string]string{
		"OUTPOST_COLOR":          to,
		"OUTPOST_PREVIOUS_COLOR": from,
		"OUTPOST_APP":            r.r.GetApp(),
		"OUTPOST_RELEASE":        r.r.GetReleaseId(),
		"OUTPOST_ROLLOUT":        r.id(),
	}
}

// switchFailed handles a failed traffic switch: queue the switch back, or,
// when there is nothing to switch back to, stop loudly.
func (e *Engine) switchFailed(n *nodeRun, errMsg string) {
	r := n.run
	bg := r.r.GetBlueGreen()
	to := bg.GetTargetColor()
	canBack := !bg.GetSwitchBack() && (bg.GetLiveColor() != "" || r.r.GetPlan().GetStrategy().GetSwitchBackHook() != "")
	why := fmt.Sprintf("traffic switch to %s failed on %s: %s", colorOr(to, "the new color"), n.id(), errMsg)
	if !canBack {
		n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
		n.rn.Error = why
		e.log.Error("traffic switch failed and cannot be switched back: check the switch node", "rollout", r.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "err", errMsg)
		e.abort(r, why+"; no switch back possible (no earlier color or switch-back hook): check the switch node")
		return
	}
	n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
	n.rn.RollingBack = true
	n.rn.Error = why + "; rolling back"
	n.rn.AssignmentId = ""
	e.log.Warn("traffic switch failed; switching back", "rollout", r.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "err", errMsg)
	e.abort(r, fmt.Sprintf("%s; switching traffic back to %s", why, colorOr(bg.GetLiveColor(), "the previous color")))
}

func colorOr(c, otherwise string) string {
	if c == "" {
		return otherwise
	}
	return c
}

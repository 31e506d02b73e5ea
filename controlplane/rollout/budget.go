package rollout

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// checkBudget aborts the rollout when more than max_fail_percent of the
// stage's nodes failed.
func (e *Engine) checkBudget(r *run, stage int) {
	if r.aborting() {
		return
	}
	switch r.r.GetState() {
	case outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:
	default:
		return
	}
	if stage != int(r.r.GetCurrentStage()) {
		return // a node of an earlier stage (a late result): that stage is settled
	}
	st := r.r.GetStages()[stage]
	total, failed := len(r.stageNodes[stage]), 0
	for _, n := range r.stageNodes[stage] {
		if rolloutstate.NodeFailed(n.rn.GetState()) {
			failed++
		}
	}
	if total == 0 || !OverBudget(failed, total, int(st.GetMaxFailPercent())) {
		return
	}
	e.abort(r, fmt.Sprintf("stage %s: %d of %d nodes failed (%s > %d%%)", st.GetName(), failed, total,
		percent(failed, total), st.GetMaxFailPercent()))
}

// OverBudget reports whether failed of total nodes is more than maxPercent
// percent: failed*100 > maxPercent*total. Exactly at the budget (1 of 10
// with 10%) is within it.
func OverBudget(failed, total, maxPercent int) bool {
	return failed*100 > maxPercent*total
}

// percent formats failed/total as a percentage with at most one decimal.
func percent(failed, total int) string {
	p := float64(failed) * 100 / float64(total)
	s := strconv.FormatFloat(p, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + "%"
}

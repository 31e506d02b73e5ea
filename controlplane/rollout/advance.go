package rollout

import (
	"fmt"
	"sort"
	"time"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// advanceAll moves every rollout as far as it can go now.
func (e *Engine) advanceAll() {
	ids := make([]string, 0, len(e.runs))
	for id := range e.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		e.advance(e.runs[id])
	}
}

func (e *Engine) advance(r *run) {
	switch r.r.GetState() {
	case outpostv1.RolloutState_ROLLOUT_STATE_APPROVED:
		if !e.mayStart(r) {
			return
		}
		e.start(r)
	case outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:
	default:
		return
	}
	now := e.cfg.Clock.Now()
	// Each pass either returns or moves to a later batch or stage.
	for range 1 << 20 {
		if r.aborting() {
			if r.running() == 0 && !r.rollbacksQueued() {
				e.finish(r, failState(r))
			}
			return
		}
		cur := int(r.r.GetCurrentStage())
		st := r.r.GetStages()[cur]
		switch st.GetState() {
		case outpostv1.StageState_STAGE_STATE_BAKING:
			if !e.bakeDone(r, st, now) {
				return
			}
			e.stageDone(r, cur)
		case outpostv1.StageState_STAGE_STATE_RUNNING:
			if b := int(st.GetCurrentBatch()); b >= 0 && b < len(r.batches[cur]) {
				for _, n := range r.batches[cur][b] {
					if !rolloutstate.NodeFinal(n.rn.GetState()) {
						return
					}
				}
				r.endBatchSpan()
				if b+1 < len(r.batches[cur]) {
					st.CurrentBatch = int32(b + 1)
					e.startBatchSpan(r)
					e.markRun(r)
					continue
				}
			}
			if d := st.GetBake().AsDuration(); (st.GetBake() != nil && d > 0) || st.GetAnalysis() != nil {
				e.startBake(r, st, now, d)
				continue
			}
			e.stageDone(r, cur)
		case outpostv1.StageState_STAGE_STATE_PENDING, outpostv1.StageState_STAGE_STATE_UNSPECIFIED:
			e.enterStage(r)
			continue
		case outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION:
			return // the rollout is PAUSED until PromoteRollout
		}
		if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
			return // paused for promotion
		}
		next := r.nextStage(cur)
		if next >= 0 {
			r.r.CurrentStage = int32(next)
			e.enterStage(r)
			continue
		}
		e.succeed(r)
		return
	}
}

// nextStage is the first stage after cur still to run, or -1. Stages a
// retry does not touch keep their state and are passed over.
func (r *run) nextStage(cur int) int {
	for i := cur + 1; i < len(r.r.GetStages()); i++ {
		if r.r.GetStages()[i].GetState() == outpostv1.StageState_STAGE_STATE_PENDING {
			return i
		}
	}
	return -1
}

// mayStart reports whether an approved rollout may start now: rollouts of
// one app run one at a time, in creation order, so two never fight over
// the same nodes (or, blue/green, over the traffic).
func (e *Engine) mayStart(r *run) bool {
	var blocker *run
	for _, o := range e.runs {
		if o == r || o.r.GetApp() != r.r.GetApp() {
			continue
		}
		switch o.r.GetState() {
		case outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:
		case outpostv1.RolloutState_ROLLOUT_STATE_APPROVED:
			if o.id() > r.id() {
				continue
			}
		default:
			continue
		}
		if blocker == nil || o.id() < blocker.id() {
			blocker = o
		}
	}
	msg := ""
	if blocker != nil {
		msg = fmt.Sprintf("waiting for rollout %s of %s to end", blocker.id(), r.r.GetApp())
	}
	if msg != r.queueMsg {
		if r.r.GetMessage() == "" || r.r.GetMessage() == r.queueMsg {
			r.setMessage(msg)
			e.markRun(r)
		}
		r.queueMsg = msg
	}
	return blocker == nil
}

// start moves an approved rollout to RUNNING at its first stage.
func (e *Engine) start(r *run) {
	r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	if r.queueMsg != "" && r.r.GetMessage() == r.queueMsg {
		r.setMessage("")
	}
	r.queueMsg = ""
	r.r.CurrentStage = int32(r.nextStage(-1))
	e.startSpans(r, false)
	e.log.Info("rollout started", "rollout", r.id(), "app", r.r.GetApp(), "revision", r.r.GetRevision(),
		"nodes", len(r.order), "stages", len(r.r.GetStages()))
	e.markRun(r)
	if r.r.CurrentStage < 0 {
		// Nothing to run (a retry of nodes already done cannot get here;
		// an expansion always has a stage). Finish rather than spin.
		r.r.CurrentStage = int32(len(r.r.GetStages()) - 1)
		e.succeed(r)
		return
	}
	e.enterStage(r)
}

func (e *Engine) enterStage(r *run) {
	st := r.stage()
	st.State = outpostv1.StageState_STAGE_STATE_RUNNING
	st.StartTime = timestamppb.New(e.cfg.Clock.Now())
	st.EndTime = nil
	st.CurrentBatch = -1
	e.startStageSpan(r)
	if len(st.GetBatches()) > 0 {
		st.CurrentBatch = 0
		e.startBatchSpan(r)
	}
	e.markRun(r)
}

// stageDone ends the current stage's work: it waits for promotion when
// the plan says pause: manual, else it succeeded.
func (e *Engine) stageDone(r *run, cur int) {
	st := r.r.GetStages()[cur]
	st.BakeEndTime = nil
	r.round, r.bakeOK = nil, time.Time{}
	r.endStageSpan("")
	e.markRun(r)
	if st.GetManualPause() {
		st.State = outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
		r.setMessage(fmt.Sprintf("stage %s is done; waiting for promotion (outpost rollout promote %s)", st.GetName(), r.id()))
		r.waitMsg = ""
		e.log.Info("stage waits for promotion", "rollout", r.id(), "stage", st.GetName())
		return
	}
	st.State = outpostv1.StageState_STAGE_STATE_SUCCEEDED
	st.EndTime = timestamppb.New(e.cfg.Clock.Now())
}

// succeed ends a rollout whose last stage is done. Nodes a retry did not
// run again (skipped by an earlier abort) keep it from succeeding.
func (e *Engine) succeed(r *run) {
	r.recount()
	if skipped := r.r.GetNodeCounts().GetSkipped(); skipped > 0 {
		r.setMessage(fmt.Sprintf("the retried nodes are done, but %d node(s) skipped by the earlier abort were never deployed", skipped))
		e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED)
		return
	}
	final := outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED
	if r.r.GetPlan().GetValidation().GetRequired() {
		final = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		r.setMessage("waiting for validation (outpost rollout validate " + r.id() + " --accept or --reject)")
	} else if r.r.GetMessage() == r.queueMsg || r.r.GetMessageKind() == outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_RETRYING {
		r.setMessage("")
	}
	e.finish(r, final)
}

// finish puts the rollout in a final (or validation-waiting) state.
func (e *Engine) finish(r *run, state outpostv1.RolloutState) {
	now := timestamppb.New(e.cfg.Clock.Now())
	r.r.State = state
	for _, st := range r.r.GetStages() {
		switch st.GetState() {
		case outpostv1.StageState_STAGE_STATE_RUNNING, outpostv1.StageState_STAGE_STATE_FAILED,
			outpostv1.StageState_STAGE_STATE_BAKING, outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION:
			if st.GetEndTime() == nil {
				st.EndTime = now
			}
		}
		st.BakeEndTime = nil
	}
	if r.waitMsg != "" && r.r.GetMessage() == r.waitMsg {
		r.setMessage("")
	}
	r.waitMsg = ""
	r.round = nil
	e.dropChecks(r)
	r.recount()
	c := r.r.GetNodeCounts()
	e.log.Info("rollout finished", "rollout", r.id(), "state", rolloutstate.Name(state), "message", r.r.GetMessage(),
		"succeeded", c.GetSucceeded(), "failed", c.GetFailed(), "rolled_back", c.GetRolledBack(),
		"rollback_failed", c.GetRollbackFailed(), "skipped", c.GetSkipped())
	status := ""
	switch state {
	case outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION,
		outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED:
	default:
		status = r.r.GetMessage()
		if status == "" {
			status = rolloutstate.Name(state)
		}
	}
	e.endSpansStatus(r, status, state)
	e.markRun(r)
}

// abort stops starting nodes: the current stage fails, later stages and
// pending nodes are skipped, and the rollout ends once no node runs and
// no rollback waits. Rollbacks already queued still run.
func (e *Engine) abort(r *run, msg string) {
	r.setMessage(msg)
	started := e.skipRest(r)
	if !started || (r.running() == 0 && !r.rollbacksQueued()) {
		e.finish(r, failState(r))
		return
	}
	// A paused rollout with nodes still running stops like a running one.
	r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	e.log.Info("rollout aborting; waiting for running nodes", "rollout", r.id(), "reason", msg, "running", r.running())
}

// skipRest fails the current stage of a started rollout and skips the
// stages and pending nodes after it (except queued rollbacks). It reports
// whether the rollout had started.
func (e *Engine) skipRest(r *run) (started bool) {
	r.waitMsg, r.queueMsg = "", ""
	started = r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING ||
		r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
	cur := int(r.r.GetCurrentStage())
	for i, st := range r.r.GetStages() {
		switch {
		case i == cur && started:
			st.State = outpostv1.StageState_STAGE_STATE_FAILED
		case i > cur || !started:
			if st.GetState() == outpostv1.StageState_STAGE_STATE_PENDING || st.GetState() == outpostv1.StageState_STAGE_STATE_UNSPECIFIED {
				st.State = outpostv1.StageState_STAGE_STATE_SKIPPED
			}
		}
	}
	for _, n := range r.order {
		if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING && !n.rn.GetRollingBack() {
			n.rn.State = outpostv1.NodeState_NODE_STATE_SKIPPED
			n.rn.Error = ""
			n.rn.WaitingForGateway = false
			e.markNode(n)
		}
	}
	r.round = nil
	e.dropChecks(r)
	e.markRun(r)
	return started
}

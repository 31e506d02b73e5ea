package rollout

import (
	"fmt"
	"strings"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bake: after a stage's nodes are deployed, a stage with a bake keeps
// checking their health for the bake's duration before it is done. The
// engine runs a round of checks every health interval: one HEALTH_CHECK
// assignment per node that succeeded, sent to a gateway of the node's
// datacenter, each one attempt of the plan's health check. A round in
// which any node is unhealthy fails the bake: the stage fails, its nodes
// are rolled back to their previous release (ROLLBACK assignments, which
// are recorded like deployments: RUNNING with rolling_back), the nodes not
// started yet are skipped, and the rollout ends FAILED_ROLLED_BACK. A
// round that could not reach every node (no gateway, a gateway gone, no
// answer in time) proves nothing either way and the next round follows.
// The stage is done once the bake time has passed and a round that
// started after the bake began found every node healthy.
//
// Rounds live in memory only: a new leader (or a resumed rollout) starts
// a fresh round, and the bake's end, which is in etcd, stays where it was.

// Bake defaults when the plan has no health check settings.
const (
	defaultBakeInterval = 2 * time.Second
	defaultBakeTimeout  = 30 * time.Second
	// bakeRoundSlack is added to the health timeout to bound a round.
	bakeRoundSlack = 10 * time.Second
)

// bakeRound is one health check of every node of a baking stage.
type bakeRound struct {
	started  time.Time
	deadline time.Time
	pending  map[string]*check // by assignment id
	failed   []string          // "srv-1: status 503"
	// inconclusive: some node could not be checked.
	inconclusive bool
}

// check is one bake health check out at a gateway.
type check struct {
	id    string
	n     *nodeRun
	sess  *session
	round *bakeRound
}

func bakeInterval(r *run) time.Duration {
	if d := r.r.GetDeploy().GetHealth().GetInterval().AsDuration(); d > 0 {
		return d
	}
	return defaultBakeInterval
}

func bakeRoundTimeout(r *run) time.Duration {
	d := r.r.GetDeploy().GetHealth().GetTimeout().AsDuration()
	if d <= 0 {
		d = defaultBakeTimeout
	}
	return d + bakeRoundSlack
}

// startBake moves the current stage to BAKING for d.
func (e *Engine) startBake(r *run, st *outpostv1.Stage, now time.Time, d time.Duration) {
	st.State = outpostv1.StageState_STAGE_STATE_BAKING
	st.BakeEndTime = timestamppb.New(now.Add(d))
	r.round, r.bakeOK = nil, time.Time{}
	r.ana = analysisRun{}
	// The nodes just passed their health check; the first re-check
	// follows one interval later.
	r.nextRound = now.Add(bakeInterval(r))
	e.markRun(r)
	e.log.Info("stage baking", "rollout", r.id(), "stage", st.GetName(), "bake", d)
}

// bakeDone reports whether the current (baking) stage may end.
func (e *Engine) bakeDone(r *run, st *outpostv1.Stage, now time.Time) bool {
	if st.GetBakeEndTime() == nil {
		// Cannot happen for records this engine wrote; bake in full.
		st.BakeEndTime = timestamppb.New(now.Add(st.GetBake().AsDuration()))
		e.markRun(r)
	}
	return !now.Before(st.GetBakeEndTime().AsTime()) && r.round == nil && !r.bakeOK.IsZero() && analysisDone(st)
}

// bakeTick starts and times out the rounds of every baking rollout.
func (e *Engine) bakeTick(now time.Time) {
	for _, r := range e.runs {
		st := r.stage()
		if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || r.aborting() || st == nil ||
			st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING {
			continue
		}
		if rd := r.round; rd != nil && now.After(rd.deadline) {
			for id, c := range rd.pending {
				e.cancelCheck(c, "no answer within the round's time")
				delete(rd.pending, id)
			}
			rd.inconclusive = true
			e.endRound(r, now)
		}
		if r.round == nil && !now.Before(r.nextRound) {
			e.startRound(r, now)
		}
	}
}

// startRound sends a health check for every deployed node of the stage.
func (e *Engine) startRound(r *run, now time.Time) {
	rd := &bakeRound{started: now, deadline: now.Add(bakeRoundTimeout(r)), pending: map[string]*check{}}
	r.round = rd
	if r.r.GetDeploy().GetHealth().GetCheck() == nil {
		// No health check in the plan: the bake only waits.
		e.endRound(r, now)
		return
	}
	cur := int(r.r.GetCurrentStage())
	for _, n := range r.stageNodes[cur] {
		if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || n.rn.GetRollingBack() {
			continue
		}
		if n.node == nil {
			rd.inconclusive = true
			continue
		}
		s, _ := e.pickGateway(n.rn.GetDatacenter(), now, nil)
		if s == nil {
			rd.inconclusive = true
			continue
		}
		e.assignSeq++
		c := &check{id: fmt.Sprintf("%s-%s-check-e%d-%d", r.id(), n.id(), e.cfg.Epoch, e.assignSeq), n: n, sess: s, round: rd}
		e.checks[c.id] = c
		s.checks[c.id] = c
		rd.pending[c.id] = c
		st := r.stage()
		s.link.Assign(&outpostv1.Assignment{
			AssignmentId: c.id,
			RolloutId:    r.id(),
			Epoch:        e.cfg.Epoch,
			Node:         n.node,
			Release:      r.release(),
			Deploy:       r.r.GetDeploy(),
			Owner:        e.cfg.ReplicaName + "/" + r.id(),
			Stage:        st.GetName(),
			Batch:        int32(n.batch),
			Kind:         outpostv1.AssignmentKind_ASSIGNMENT_KIND_HEALTH_CHECK,
		})
	}
	if len(rd.pending) == 0 {
		e.endRound(r, now)
	}
}

// onCheckResult applies a health check's answer.
func (e *Engine) onCheckResult(c *check, res *outpostv1.NodeResult) {
	e.forgetCheck(c)
	r := c.n.run
	rd := c.round
	if r.round != rd {
		return // from a round given up on
	}
	delete(rd.pending, c.id)
	if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		msg := res.GetError()
		if msg == "" {
			msg = "unhealthy"
		}
		rd.failed = append(rd.failed, c.n.id()+": "+msg)
	}
	if len(rd.pending) == 0 {
		e.endRound(r, e.cfg.Clock.Now())
	}
}

// endRound closes the current round and acts on what it found.
func (e *Engine) endRound(r *run, now time.Time) {
	rd := r.round
	r.round = nil
	r.nextRound = now.Add(bakeInterval(r))
	switch {
	case len(rd.failed) > 0:
		e.bakeFailed(r, rd.failed)
	case !rd.inconclusive:
		r.bakeOK = rd.started
	}
}

// bakeFailed fails the baking stage and queues the rollback of its nodes.
func (e *Engine) bakeFailed(r *run, failed []string) {
	now := e.cfg.Clock.Now()
	cur := int(r.r.GetCurrentStage())
	st := r.r.GetStages()[cur]
	why := fmt.Sprintf("health check failed during the bake of stage %s (%s)", st.GetName(), strings.Join(failed, "; "))
	n := e.queueRollbacks(r, r.stageNodes[cur], why)
	st.State = outpostv1.StageState_STAGE_STATE_FAILED
	st.EndTime = timestamppb.New(now)
	st.BakeEndTime = nil
	e.log.Warn("bake failed; rolling back the stage", "rollout", r.id(), "stage", st.GetName(), "failed", failed, "rolling_back", n)
	e.abort(r, fmt.Sprintf("%s; rolling back the stage's %d node(s)", why, n))
}

// cancelCheck tells the check's gateway to stop it and forgets it.
func (e *Engine) cancelCheck(c *check, why string) {
	e.forgetCheck(c)
	c.sess.link.Cancel(c.id, why)
}

func (e *Engine) forgetCheck(c *check) {
	delete(e.checks, c.id)
	delete(c.sess.checks, c.id)
}

// dropChecks cancels every check of r and forgets its round.
func (e *Engine) dropChecks(r *run) {
	for _, c := range e.checks {
		if c.n.run == r {
			e.cancelCheck(c, "the bake ended")
		}
	}
	r.round = nil
	r.ana.round = nil // its measurements, when they come back, are dropped
}

package rollout

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// run is one rollout the engine drives.
type run struct {
	r     *outpostv1.Rollout
	order []*nodeRun // sorted by node id
	nodes map[string]*nodeRun
	// batches[stage][batch] are the nodes of each batch, in batch order.
	batches [][][]*nodeRun
	// stageNodes[stage] are all nodes of a stage.
	stageNodes [][]*nodeRun

	// revState is the state last written to the revision record.
	revState outpostv1.RolloutState

	// waitMsg is the "waiting for a gateway" message last put into
	// r.Message; empty when the rollout is not waiting.
	waitMsg string
	// queueMsg is the "waiting for rollout X" message last put into
	// r.Message while an earlier rollout of the app runs; empty otherwise.
	queueMsg string

	// Bake of the current stage (in memory: a new term starts over with
	// a fresh round). round is the health check round out now, nil
	// between rounds; nextRound is when the next one starts; bakeOK is
	// when the last round that found every node healthy started (zero:
	// none since the bake began).
	round     *bakeRound
	nextRound time.Time
	bakeOK    time.Time

	// Spans of this leadership term; nil when not started.
	ctx       context.Context
	span      trace.Span
	batchCtx  context.Context
	batchSpan trace.Span
}

// nodeRun is one node of a run.
type nodeRun struct {
	run   *run
	rn    *outpostv1.RolloutNode
	node  *outpostv1.Node // from the inventory; nil when the node was deleted
	stage int
	batch int

	// sess is the gateway session running the node's assignment; nil when
	// none (pending, finished, or orphaned).
	sess *session
	// orphanDeadline is when an orphaned assignment (its gateway went
	// away) is handed to another gateway.
	orphanDeadline time.Time
	span           trace.Span
	// refusals counts gateways refusing the node's assignments in a row.
	refusals int
	// takeover is the assignment whose lock on the node the node's next
	// assignment may take over (Assignment.takeover_lock_of): the last one
	// given up on after it had started, because its gateway went away.
	// "" when none; not kept across leaders for pending nodes.
	takeover string
	// notified is the final state OnNodeResult was last told about (or
	// the state loaded from etcd).
	notified outpostv1.NodeState
	// written is when the node's record was last queued for writing; zero
	// before the first write of this leadership term.
	written time.Time
}

func (r *run) id() string     { return r.r.GetId() }
func (n *nodeRun) id() string { return n.rn.GetNodeId() }

// aborting reports whether the rollout is stopping: its current stage
// failed (budget, abort, failed bake or traffic switch) and it waits for
// running nodes to finish and queued rollbacks to run.
func (r *run) aborting() bool {
	cur := int(r.r.GetCurrentStage())
	return r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING &&
		cur >= 0 && cur < len(r.r.GetStages()) &&
		r.r.GetStages()[cur].GetState() == outpostv1.StageState_STAGE_STATE_FAILED
}

// rollbacksQueued reports whether nodes wait to be rolled back.
func (r *run) rollbacksQueued() bool {
	for _, n := range r.order {
		if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING && n.rn.GetRollingBack() {
			return true
		}
	}
	return false
}

// stage returns the current stage, or nil before the first.
func (r *run) stage() *outpostv1.Stage {
	cur := int(r.r.GetCurrentStage())
	if cur < 0 || cur >= len(r.r.GetStages()) {
		return nil
	}
	return r.r.GetStages()[cur]
}

func (r *run) running() int {
	n := 0
	for _, nr := range r.order {
		if nr.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
			n++
		}
	}
	return n
}

// recount recomputes node counts of the rollout and its stages.
func (r *run) recount() {
	total := &outpostv1.NodeCounts{}
	for i, st := range r.r.GetStages() {
		c := &outpostv1.NodeCounts{}
		for _, n := range r.stageNodes[i] {
			rolloutstate.Add(c, n.rn.GetState())
			rolloutstate.Add(total, n.rn.GetState())
		}
		st.NodeCounts = c
	}
	r.r.NodeCounts = total
}

// loadAll loads every active rollout not yet known.
func (e *Engine) loadAll(ctx context.Context) error {
	var found []*outpostv1.Rollout
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.ListChildren(ctx, store.RolloutsPrefix, 0, after, func(_ string, v []byte) error {
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if rolloutstate.Active(r.GetState()) && e.runs[r.GetId()] == nil {
				found = append(found, r)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("rollout: list rollouts: %w", err)
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(found) == 0 {
		return nil
	}
	inv, err := e.inventory(ctx)
	if err != nil {
		return err
	}
	for _, r := range found {
		rr, err := e.build(ctx, r, inv)
		if err != nil {
			return err
		}
		e.adopt(rr)
	}
	return nil
}

// loadOne reads one rollout and its nodes without registering it.
func (e *Engine) loadOne(ctx context.Context, id string) (*run, error) {
	r := &outpostv1.Rollout{}
	found, _, err := e.cfg.Store.Get(ctx, store.RolloutKey(id), r)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	inv, err := e.inventory(ctx)
	if err != nil {
		return nil, err
	}
	return e.build(ctx, r, inv)
}

// onRevisionEvent starts rollouts created (on any replica) after the
// engine loaded: each is created together with its revision record.
func (e *Engine) onRevisionEvent(ctx context.Context, ev *clientv3.Event) {
	if !ev.IsCreate() {
		return
	}
	rev := &outpostv1.Revision{}
	if err := proto.Unmarshal(ev.Kv.Value, rev); err != nil {
		e.log.Warn("undecodable revision record", "key", string(ev.Kv.Key), "err", err)
		return
	}
	id := rev.GetRolloutId()
	if id == "" || e.runs[id] != nil || !rolloutstate.Active(rev.GetState()) {
		return
	}
	rr, err := e.loadOne(ctx, id)
	if err != nil {
		e.log.Warn("loading a new rollout failed", "rollout", id, "err", err)
		return
	}
	if rolloutstate.Active(rr.r.GetState()) {
		e.adopt(rr)
	}
}

// inventory reads every node; rollouts need addresses, users and host keys.
func (e *Engine) inventory(ctx context.Context) (map[string]*outpostv1.Node, error) {
	inv := map[string]*outpostv1.Node{}
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.List(ctx, store.NodesPrefix, 0, after, func(_ string, v []byte) error {
			n := &outpostv1.Node{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			inv[n.GetId()] = n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rollout: list nodes: %w", err)
		}
		if next == "" {
			break
		}
		after = next
	}
	return inv, nil
}

// build reads a rollout's node records and links them to its stages.
func (e *Engine) build(ctx context.Context, r *outpostv1.Rollout, inv map[string]*outpostv1.Node) (*run, error) {
	recs := map[string]*outpostv1.RolloutNode{}
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.List(ctx, store.RolloutNodesPrefix(r.GetId()), 0, after, func(_ string, v []byte) error {
			n := &outpostv1.RolloutNode{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			recs[n.GetNodeId()] = n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rollout: list nodes of %s: %w", r.GetId(), err)
		}
		if next == "" {
			break
		}
		after = next
	}
	// The revision record was written with the rollout's state.
	rr := &run{r: r, nodes: map[string]*nodeRun{}, revState: r.GetState()}
	for si, st := range r.GetStages() {
		rr.batches = append(rr.batches, nil)
		rr.stageNodes = append(rr.stageNodes, nil)
		for bi, b := range st.GetBatches() {
			var ns []*nodeRun
			for _, id := range b.GetNodeIds() {
				rec := recs[id]
				if rec == nil {
					// Not written (a create interrupted half-way): it never ran.
					rec = &outpostv1.RolloutNode{
						RolloutId: r.GetId(), NodeId: id, Stage: st.GetName(), Batch: int32(bi),
						State: outpostv1.NodeState_NODE_STATE_PENDING, Datacenter: inv[id].GetDatacenter(),
					}
				}
				n := &nodeRun{run: rr, rn: rec, node: inv[id], stage: si, batch: bi, notified: rec.GetState()}
				rr.nodes[id] = n
				rr.order = append(rr.order, n)
				ns = append(ns, n)
				rr.stageNodes[si] = append(rr.stageNodes[si], n)
			}
			rr.batches[si] = append(rr.batches[si], ns)
		}
	}
	sort.Slice(rr.order, func(i, j int) bool { return rr.order[i].id() < rr.order[j].id() })
	return rr, nil
}

// adopt registers a loaded rollout: running nodes become orphans that wait
// for their gateway to report them (or for the grace to pass).
func (e *Engine) adopt(r *run) {
	e.runs[r.id()] = r
	now := e.cfg.Now()
	running := 0
	for _, n := range r.order {
		if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING {
			continue
		}
		running++
		if aid := n.rn.GetAssignmentId(); aid != "" {
			e.assignments[aid] = n
		}
		n.orphanDeadline = now.Add(e.cfg.OrphanGrace)
		e.orphans[n] = struct{}{}
	}
	if r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		e.startSpans(r, true)
		for _, n := range r.order {
			if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
				n.span = e.startNodeSpan(r, n, true)
			}
		}
	}
	e.log.Info("rollout loaded", "rollout", r.id(), "app", r.r.GetApp(), "state", rolloutstate.Name(r.r.GetState()),
		"nodes", len(r.order), "running", running)
	e.updateRolloutGauge()
}

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
	now := e.cfg.Now()
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
				e.endBatchSpan(r)
				if b+1 < len(r.batches[cur]) {
					st.CurrentBatch = int32(b + 1)
					e.startBatchSpan(r)
					e.markRun(r)
					continue
				}
			}
			if d := st.GetBake().AsDuration(); st.GetBake() != nil && d > 0 {
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

// stageDone ends the current stage's work: it waits for promotion when
// the plan says pause: manual, else it succeeded.
func (e *Engine) stageDone(r *run, cur int) {
	st := r.r.GetStages()[cur]
	st.BakeEndTime = nil
	r.round, r.bakeOK = nil, time.Time{}
	e.markRun(r)
	if st.GetManualPause() {
		st.State = outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
		r.r.Message = fmt.Sprintf("stage %s is done; waiting for promotion (outpost rollout promote %s)", st.GetName(), r.id())
		r.waitMsg = ""
		e.log.Info("stage waits for promotion", "rollout", r.id(), "stage", st.GetName())
		e.updateRolloutGauge()
		return
	}
	st.State = outpostv1.StageState_STAGE_STATE_SUCCEEDED
	st.EndTime = timestamppb.New(e.cfg.Now())
}

// succeed ends a rollout whose last stage is done. Nodes a retry did not
// run again (skipped by an earlier abort) keep it from succeeding.
func (e *Engine) succeed(r *run) {
	r.recount()
	if skipped := r.r.GetNodeCounts().GetSkipped(); skipped > 0 {
		r.r.Message = fmt.Sprintf("the retried nodes are done, but %d node(s) skipped by the earlier abort were never deployed", skipped)
		e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED)
		return
	}
	final := outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED
	if r.r.GetPlan().GetValidation().GetRequired() {
		final = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		r.r.Message = "waiting for validation (outpost rollout validate " + r.id() + " --accept or --reject)"
	} else if r.r.GetMessage() == r.queueMsg || strings.HasPrefix(r.r.GetMessage(), "retrying ") {
		r.r.Message = ""
	}
	e.finish(r, final)
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
			r.r.Message = msg
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
		r.r.Message = ""
	}
	r.queueMsg = ""
	r.r.CurrentStage = int32(r.nextStage(-1))
	e.startSpans(r, false)
	e.log.Info("rollout started", "rollout", r.id(), "app", r.r.GetApp(), "revision", r.r.GetRevision(),
		"nodes", len(r.order), "stages", len(r.r.GetStages()))
	e.markRun(r)
	e.updateRolloutGauge()
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
	st.StartTime = timestamppb.New(e.cfg.Now())
	st.EndTime = nil
	st.CurrentBatch = -1
	if len(st.GetBatches()) > 0 {
		st.CurrentBatch = 0
		e.startBatchSpan(r)
	}
	e.markRun(r)
}

// finish puts the rollout in a final (or validation-waiting) state.
func (e *Engine) finish(r *run, state outpostv1.RolloutState) {
	now := timestamppb.New(e.cfg.Now())
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
		r.r.Message = ""
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
	if !rolloutstate.Deployed(state) {
		status = r.r.GetMessage()
		if status == "" {
			status = rolloutstate.Name(state)
		}
	}
	r.endSpansStatus(status, rolloutstate.Name(state))
	e.markRun(r)
	e.updateRolloutGauge()
}

// abort stops starting nodes: the current stage fails, later stages and
// pending nodes are skipped, and the rollout ends once no node runs and
// no rollback waits. Rollbacks already queued still run.
func (e *Engine) abort(r *run, msg string) {
	r.r.Message = msg
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
			e.markNode(n)
		}
	}
	r.round = nil
	e.dropChecks(r)
	e.markRun(r)
	return started
}

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

// failNode ends a node that could not be deployed (or, when rolling back,
// rolled back) at all.
func (e *Engine) failNode(n *nodeRun, msg string) {
	n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
	if n.rn.GetRollingBack() {
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED
	}
	n.rn.Error = msg
	e.markNode(n)
	e.log.Warn("node failed", "rollout", n.run.id(), "node", n.id(), "err", msg)
	if m := e.cfg.Metrics; m != nil {
		m.NodeDeployments.WithLabelValues(rolloutstate.NodeName(n.rn.GetState())).Inc()
	}
	e.checkBudget(n.run, n.stage)
}

// endSpans ends the term's spans of a rollout that did not finish.
func (r *run) endSpans(why string) {
	for _, n := range r.order {
		if n.span != nil {
			n.span.SetAttributes(attrInterrupted.String(why))
			n.span.End()
			n.span = nil
		}
	}
	if r.batchSpan != nil {
		r.batchSpan.SetAttributes(attrInterrupted.String(why))
		r.batchSpan.End()
		r.batchSpan = nil
	}
	if r.span != nil {
		r.span.SetAttributes(attrInterrupted.String(why))
		r.span.End()
		r.span = nil
	}
}

// endSpansStatus ends the spans of a finished rollout; a non-empty errMsg
// marks the rollout span as an error.
func (r *run) endSpansStatus(errMsg, state string) {
	if r.batchSpan != nil {
		r.batchSpan.End()
		r.batchSpan = nil
	}
	if r.span != nil {
		r.span.SetAttributes(attrState.String(state))
		if errMsg != "" {
			r.span.SetStatus(codes.Error, errMsg)
		}
		r.span.End()
		r.span = nil
	}
}

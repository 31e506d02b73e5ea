package rollout

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
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
}

func (r *run) id() string     { return r.r.GetId() }
func (n *nodeRun) id() string { return n.rn.GetNodeId() }

func finalNode(s outpostv1.NodeState) bool {
	switch s {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.NodeState_NODE_STATE_FAILED,
		outpostv1.NodeState_NODE_STATE_ROLLED_BACK, outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED,
		outpostv1.NodeState_NODE_STATE_SKIPPED:
		return true
	}
	return false
}

func failedNode(s outpostv1.NodeState) bool {
	switch s {
	case outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.NodeState_NODE_STATE_ROLLED_BACK,
		outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		return true
	}
	return false
}

// aborting reports whether the rollout is stopping: its current stage
// failed (budget or abort) and it waits for running nodes to finish.
func (r *run) aborting() bool {
	cur := int(r.r.GetCurrentStage())
	return r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING &&
		cur >= 0 && cur < len(r.r.GetStages()) &&
		r.r.GetStages()[cur].GetState() == outpostv1.StageState_STAGE_STATE_FAILED
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
			addCount(c, n.rn.GetState())
			addCount(total, n.rn.GetState())
		}
		st.NodeCounts = c
	}
	r.r.NodeCounts = total
}

func addCount(c *outpostv1.NodeCounts, s outpostv1.NodeState) {
	c.Total++
	switch s {
	case outpostv1.NodeState_NODE_STATE_PENDING:
		c.Pending++
	case outpostv1.NodeState_NODE_STATE_RUNNING:
		c.Running++
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED:
		c.Succeeded++
	case outpostv1.NodeState_NODE_STATE_FAILED:
		c.Failed++
	case outpostv1.NodeState_NODE_STATE_ROLLED_BACK:
		c.RolledBack++
	case outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		c.RollbackFailed++
	case outpostv1.NodeState_NODE_STATE_SKIPPED:
		c.Skipped++
	}
}

// NodeCounts sums node states; it is what the engine stores in
// Rollout.node_counts, exported for the API's dry run.
func NodeCounts(nodes []*outpostv1.RolloutNode) *outpostv1.NodeCounts {
	c := &outpostv1.NodeCounts{}
	for _, n := range nodes {
		addCount(c, n.GetState())
	}
	return c
}

// active reports whether the engine drives rollouts in state s.
func active(s outpostv1.RolloutState) bool {
	switch s {
	case outpostv1.RolloutState_ROLLOUT_STATE_APPROVED, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
		outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:
		return true
	}
	return false
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
			if active(r.GetState()) && e.runs[r.GetId()] == nil {
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
	if id == "" || e.runs[id] != nil || !active(rev.GetState()) {
		return
	}
	rr, err := e.loadOne(ctx, id)
	if err != nil {
		e.log.Warn("loading a new rollout failed", "rollout", id, "err", err)
		return
	}
	if active(rr.r.GetState()) {
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
				n := &nodeRun{run: rr, rn: rec, node: inv[id], stage: si, batch: bi}
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
	e.log.Info("rollout loaded", "rollout", r.id(), "app", r.r.GetApp(), "state", stateName(r.r.GetState()),
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
		e.start(r)
	case outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:
	default:
		return
	}
	now := timestamppb.New(e.cfg.Now())
	// Each pass either returns or moves to a later batch or stage.
	for range 1 << 20 {
		if r.aborting() {
			if r.running() == 0 {
				e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED)
			}
			return
		}
		cur := int(r.r.GetCurrentStage())
		st := r.r.GetStages()[cur]
		if b := int(st.GetCurrentBatch()); b >= 0 && b < len(r.batches[cur]) {
			for _, n := range r.batches[cur][b] {
				if !finalNode(n.rn.GetState()) {
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
		st.State = outpostv1.StageState_STAGE_STATE_SUCCEEDED
		st.EndTime = now
		e.markRun(r)
		if cur+1 < len(r.r.GetStages()) {
			r.r.CurrentStage = int32(cur + 1)
			e.enterStage(r)
			continue
		}
		final := outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED
		if r.r.GetPlan().GetValidation().GetRequired() {
			final = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		}
		e.finish(r, final)
		return
	}
}

// start moves an approved rollout to RUNNING at its first stage.
func (e *Engine) start(r *run) {
	r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	r.r.CurrentStage = 0
	e.startSpans(r, false)
	e.log.Info("rollout started", "rollout", r.id(), "app", r.r.GetApp(), "revision", r.r.GetRevision(),
		"nodes", len(r.order), "stages", len(r.r.GetStages()))
	e.enterStage(r)
	e.markRun(r)
	e.updateRolloutGauge()
}

func (e *Engine) enterStage(r *run) {
	st := r.r.GetStages()[r.r.GetCurrentStage()]
	st.State = outpostv1.StageState_STAGE_STATE_RUNNING
	st.StartTime = timestamppb.New(e.cfg.Now())
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
		case outpostv1.StageState_STAGE_STATE_RUNNING, outpostv1.StageState_STAGE_STATE_FAILED:
			if st.GetEndTime() == nil {
				st.EndTime = now
			}
		}
	}
	if r.waitMsg != "" && r.r.GetMessage() == r.waitMsg {
		r.r.Message = ""
	}
	r.waitMsg = ""
	r.recount()
	c := r.r.GetNodeCounts()
	e.log.Info("rollout finished", "rollout", r.id(), "state", stateName(state), "message", r.r.GetMessage(),
		"succeeded", c.GetSucceeded(), "failed", c.GetFailed(), "rolled_back", c.GetRolledBack(),
		"rollback_failed", c.GetRollbackFailed(), "skipped", c.GetSkipped())
	status := ""
	if state != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED && state != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION {
		status = r.r.GetMessage()
		if status == "" {
			status = stateName(state)
		}
	}
	r.endSpansStatus(status, stateName(state))
	e.markRun(r)
	e.updateRolloutGauge()
}

// abort stops starting nodes: the current stage fails, later stages and
// pending nodes are skipped, and the rollout ends ABORTED once no node runs.
func (e *Engine) abort(r *run, msg string) {
	r.r.Message = msg
	r.waitMsg = ""
	cur := int(r.r.GetCurrentStage())
	for i, st := range r.r.GetStages() {
		switch {
		case i == cur && r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:
			st.State = outpostv1.StageState_STAGE_STATE_FAILED
		case i > cur || r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:
			if st.GetState() == outpostv1.StageState_STAGE_STATE_PENDING || st.GetState() == outpostv1.StageState_STAGE_STATE_UNSPECIFIED {
				st.State = outpostv1.StageState_STAGE_STATE_SKIPPED
			}
		}
	}
	for _, n := range r.order {
		if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
			n.rn.State = outpostv1.NodeState_NODE_STATE_SKIPPED
			n.rn.Error = ""
			e.markNode(n)
		}
	}
	e.markRun(r)
	if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || r.running() == 0 {
		e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED)
		return
	}
	e.log.Info("rollout aborting; waiting for running nodes", "rollout", r.id(), "reason", msg, "running", r.running())
}

// checkBudget aborts the rollout when more than max_fail_percent of the
// stage's nodes failed.
func (e *Engine) checkBudget(r *run, stage int) {
	if r.aborting() || r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		return
	}
	st := r.r.GetStages()[stage]
	total, failed := len(r.stageNodes[stage]), 0
	for _, n := range r.stageNodes[stage] {
		if failedNode(n.rn.GetState()) {
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

// failNode ends a node that could not be deployed at all.
func (e *Engine) failNode(n *nodeRun, msg string) {
	n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
	n.rn.Error = msg
	e.markNode(n)
	e.log.Warn("node failed", "rollout", n.run.id(), "node", n.id(), "err", msg)
	if m := e.cfg.Metrics; m != nil {
		m.NodeDeployments.WithLabelValues(nodeStateName(n.rn.GetState())).Inc()
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

package cli

import (
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// progress is what a watch knows about a rollout, kept as counters so each
// event costs O(1) (plus O(stages) for a Rollout message) however many
// nodes the rollout has: nothing re-scans the nodes per event.
type progress struct {
	rollout *outpostv1.Rollout // latest; nil before the first message
	stages  []*stageProgress   // in rollout order
	byName  map[string]int     // stage name -> index in stages
	nodes   map[string]*nodeProgress
	// idWidth is the longest node id, to align per-node lines.
	idWidth int
	// revision is the highest WatchRolloutResponse.revision seen after a
	// whole snapshot: the resume point.
	revision int64
	// snapshot is set while the snapshot a stream starts with is being
	// received: the view is incomplete until its snapshot_end, and
	// revision does not move, so a stream broken in the middle resumes
	// with a whole snapshot again instead of missing its remaining nodes.
	snapshot bool
}

// stateCounts counts nodes by NodeState (indexed by the enum value).
type stateCounts [8]int32

func (c *stateCounts) add(o stateCounts) {
	for i := range c {
		c[i] += o[i]
	}
}

// done counts nodes that will not change any more in this rollout.
func (c stateCounts) done() int32 {
	var n int32
	for s, v := range c {
		if rolloutstate.NodeFinal(outpostv1.NodeState(s)) {
			n += v
		}
	}
	return n
}

func (c stateCounts) total() int32 {
	var n int32
	for _, v := range c {
		n += v
	}
	return n
}

func (c stateCounts) proto() *outpostv1.NodeCounts {
	return &outpostv1.NodeCounts{
		Total:          c.total(),
		Pending:        c[outpostv1.NodeState_NODE_STATE_PENDING] + c[outpostv1.NodeState_NODE_STATE_UNSPECIFIED],
		Running:        c[outpostv1.NodeState_NODE_STATE_RUNNING],
		Succeeded:      c[outpostv1.NodeState_NODE_STATE_SUCCEEDED],
		Failed:         c[outpostv1.NodeState_NODE_STATE_FAILED],
		RolledBack:     c[outpostv1.NodeState_NODE_STATE_ROLLED_BACK],
		RollbackFailed: c[outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED],
		Skipped:        c[outpostv1.NodeState_NODE_STATE_SKIPPED],
	}
}

type stageProgress struct {
	name    string
	state   outpostv1.StageState
	counts  stateCounts
	batches []stateCounts
	// current is the batch running, -1 before the first.
	current int32
}

type nodeProgress struct {
	stageName string
	batch     int
	// stage indexes progress.stages; -1 when the node is in no known batch
	// (and so not counted).
	stage int
	state outpostv1.NodeState
}

func newProgress() *progress {
	return &progress{byName: map[string]int{}, nodes: map[string]*nodeProgress{}}
}

// watchSink hears about what changed, to print it.
type watchSink interface {
	rolloutChanged(old, r *outpostv1.Rollout)
	stageChanged(r *outpostv1.Rollout, s *stageProgress, old outpostv1.StageState)
	nodeChanged(n *outpostv1.RolloutNode, old outpostv1.NodeState)
	stepEnded(ev *outpostv1.NodeStepEvent)
	// measured: a canary analysis measurement of stage was recorded.
	measured(stage string, m *outpostv1.Measurement)
}

// apply folds one watch item into p and tells sink what changed.
func (p *progress) apply(resp *outpostv1.WatchRolloutResponse, sink watchSink) {
	switch ev := resp.GetEvent().(type) {
	case *outpostv1.WatchRolloutResponse_SnapshotEnd:
		p.snapshot = false
	case *outpostv1.WatchRolloutResponse_Rollout:
		p.applyRollout(ev.Rollout, sink)
	case *outpostv1.WatchRolloutResponse_Node:
		p.applyNode(ev.Node, sink)
	case *outpostv1.WatchRolloutResponse_NodePage:
		for _, n := range ev.NodePage.GetNodes() {
			p.applyNode(n, sink)
		}
	case *outpostv1.WatchRolloutResponse_StepEvent:
		if ph := ev.StepEvent.GetPhase(); ph == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED || ph == outpostv1.StepPhase_STEP_PHASE_FAILED {
			sink.stepEnded(ev.StepEvent)
		}
	}
	if !p.snapshot && resp.GetRevision() > p.revision {
		p.revision = resp.GetRevision()
	}
}

// finished reports whether the watch has seen all it waits for: the
// rollout is finished (rolloutstate.Finished: terminal, or deployed and
// waiting for validation) and no snapshot is half received.
func (p *progress) finished() bool {
	return !p.snapshot && p.rollout != nil && rolloutstate.Finished(p.rollout.GetState())
}

func (p *progress) applyRollout(r *outpostv1.Rollout, sink watchSink) {
	old := p.rollout
	p.rollout = r
	if !p.sameShape(r) {
		p.rebuild(r)
	}
	if old == nil {
		// The header line first, then what its stages are doing.
		sink.rolloutChanged(nil, r)
	}
	for i, s := range r.GetStages() {
		sp := p.stages[i]
		sp.current = s.GetCurrentBatch()
		if s.GetState() != sp.state {
			prev := sp.state
			sp.state = s.GetState()
			sink.stageChanged(r, sp, prev)
		}
		seen := 0
		if old != nil && i < len(old.GetStages()) && old.GetStages()[i].GetName() == s.GetName() {
			seen = len(old.GetStages()[i].GetMeasurements())
		}
		for _, m := range s.GetMeasurements()[min(seen, len(s.GetMeasurements())):] {
			sink.measured(s.GetName(), m)
		}
	}
	// A stage's end is told before the rollout state it causes.
	if old != nil && (old.GetState() != r.GetState() || old.GetMessage() != r.GetMessage()) {
		sink.rolloutChanged(old, r)
	}
}

// sameShape reports whether r has the stages and batch sizes p counts;
// a Rollout message repeats them on every change, and they rarely differ.
func (p *progress) sameShape(r *outpostv1.Rollout) bool {
	if len(r.GetStages()) != len(p.stages) {
		return false
	}
	for i, s := range r.GetStages() {
		sp := p.stages[i]
		if s.GetName() != sp.name || len(s.GetBatches()) != len(sp.batches) {
			return false
		}
		for j, b := range s.GetBatches() {
			if batchSize(b) != sp.batches[j].total() {
				return false
			}
		}
	}
	return true
}

// rebuild recounts from scratch: every batched node starts PENDING, then
// the node states already known are applied. O(nodes), on shape changes only.
func (p *progress) rebuild(r *outpostv1.Rollout) {
	p.stages = p.stages[:0]
	clear(p.byName)
	for i, s := range r.GetStages() {
		sp := &stageProgress{name: s.GetName(), current: -1, batches: make([]stateCounts, len(s.GetBatches()))}
		for j, b := range s.GetBatches() {
			sp.batches[j][outpostv1.NodeState_NODE_STATE_PENDING] = batchSize(b)
			for _, id := range b.GetNodeIds() {
				p.idWidth = max(p.idWidth, len(id))
			}
		}
		for _, b := range sp.batches {
			sp.counts.add(b)
		}
		p.stages = append(p.stages, sp)
		p.byName[s.GetName()] = i
	}
	for _, n := range p.nodes {
		n.stage = -1
		p.place(n)
	}
}

// batchSize is how many nodes a batch has: a watch that asks for node
// pages gets batches with a node count instead of node ids.
func batchSize(b *outpostv1.Batch) int32 {
	if ids := b.GetNodeIds(); len(ids) > 0 {
		return int32(len(ids))
	}
	return b.GetNodeCount()
}

// place counts n in its batch, if the rollout has that batch.
func (p *progress) place(n *nodeProgress) {
	si, ok := p.byName[n.stageName]
	if !ok || n.batch < 0 || n.batch >= len(p.stages[si].batches) {
		n.stage = -1
		return
	}
	n.stage = si
	p.count(n, +1)
}

func (p *progress) applyNode(rn *outpostv1.RolloutNode, sink watchSink) {
	p.idWidth = max(p.idWidth, len(rn.GetNodeId()))
	n := p.nodes[rn.GetNodeId()]
	old := outpostv1.NodeState_NODE_STATE_PENDING
	if n == nil {
		n = &nodeProgress{stage: -1, state: old}
		p.nodes[rn.GetNodeId()] = n
	} else {
		old = n.state
	}
	if n.stage >= 0 {
		p.count(n, -1)
	}
	n.state, n.stageName, n.batch = rn.GetState(), rn.GetStage(), int(rn.GetBatch())
	p.place(n)
	if old != n.state {
		sink.nodeChanged(rn, old)
	}
}

// count moves one node between PENDING and its state in its batch:
// +1 counts it in its state, -1 returns it to PENDING.
func (p *progress) count(n *nodeProgress, dir int32) {
	sp := p.stages[n.stage]
	pending := outpostv1.NodeState_NODE_STATE_PENDING
	st := n.state
	if int(st) >= len(stateCounts{}) {
		st = outpostv1.NodeState_NODE_STATE_UNSPECIFIED // a state newer than this CLI
	}
	sp.batches[n.batch][pending] -= dir
	sp.batches[n.batch][st] += dir
	sp.counts[pending] -= dir
	sp.counts[st] += dir
}

// counts sums the stages.
func (p *progress) counts() stateCounts {
	var c stateCounts
	for _, s := range p.stages {
		c.add(s.counts)
	}
	return c
}

// currentStage returns the stage the rollout is in, or nil.
func (p *progress) currentStage() *stageProgress {
	i := int(p.rollout.GetCurrentStage())
	if i < 0 || i >= len(p.stages) {
		return nil
	}
	return p.stages[i]
}

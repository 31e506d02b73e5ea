package cli

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// bigRollout is a rollout of n nodes in batches of batch.
func bigRollout(n, batch int) *outpostv1.Rollout {
	s := &outpostv1.Stage{Name: "rolling", State: outpostv1.StageState_STAGE_STATE_RUNNING}
	for i := 0; i < n; i += batch {
		b := &outpostv1.Batch{Index: int32(len(s.Batches))}
		for j := i; j < min(i+batch, n); j++ {
			b.NodeIds = append(b.NodeIds, fmt.Sprintf("node-%05d", j))
		}
		s.Batches = append(s.Batches, b)
	}
	return &outpostv1.Rollout{Id: "r-1", State: outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, Stages: []*outpostv1.Stage{s}}
}

func nodeResp(id string, batch int32, state outpostv1.NodeState) *outpostv1.WatchRolloutResponse {
	return &outpostv1.WatchRolloutResponse{Event: &outpostv1.WatchRolloutResponse_Node{Node: &outpostv1.RolloutNode{
		NodeId: id, Stage: "rolling", Batch: batch, State: state,
	}}}
}

func rolloutResp(r *outpostv1.Rollout) *outpostv1.WatchRolloutResponse {
	return &outpostv1.WatchRolloutResponse{Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: r}}
}

func TestProgressCounts(t *testing.T) {
	const (
		running = outpostv1.NodeState_NODE_STATE_RUNNING
		ok      = outpostv1.NodeState_NODE_STATE_SUCCEEDED
		failed  = outpostv1.NodeState_NODE_STATE_FAILED
	)
	p := newProgress()
	// A node before its rollout (possible after a resume): kept, counted once the shape is known.
	p.apply(nodeResp("node-00000", 0, ok), nopSink{})
	p.apply(rolloutResp(bigRollout(7, 3)), nopSink{})
	p.apply(nodeResp("node-00001", 0, running), nopSink{})
	p.apply(nodeResp("node-00001", 0, failed), nopSink{})
	p.apply(nodeResp("node-00003", 1, running), nopSink{})
	// A node of an unknown stage is not counted anywhere.
	p.apply(&outpostv1.WatchRolloutResponse{Event: &outpostv1.WatchRolloutResponse_Node{Node: &outpostv1.RolloutNode{NodeId: "x", Stage: "nope", State: ok}}}, nopSink{})
	want := &outpostv1.NodeCounts{Total: 7, Pending: 4, Running: 1, Succeeded: 1, Failed: 1}
	if diff := cmp.Diff(want, p.counts().proto(), protocmp.Transform()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if got := p.stages[0].batches[0].done(); got != 2 {
		t.Errorf("batch 0 done = %d, want 2", got)
	}
	// A new shape (a stage added) recounts from the known node states.
	r := bigRollout(7, 3)
	r.Stages = append(r.Stages, &outpostv1.Stage{Name: "more", Batches: []*outpostv1.Batch{{NodeIds: []string{"node-x"}}}})
	p.apply(rolloutResp(r), nopSink{})
	want.Total, want.Pending = 8, 5
	if diff := cmp.Diff(want, p.counts().proto(), protocmp.Transform()); diff != "" {
		t.Errorf("counts after reshape (-want +got):\n%s", diff)
	}
}

// BenchmarkWatch10000Nodes measures folding a watch of 10,000 nodes in
// batches of 50: every node goes RUNNING then SUCCEEDED, with a Rollout
// message after each batch, rendered live as a terminal would see it.
func BenchmarkWatch10000Nodes(b *testing.B) {
	const n, batch = 10000, 50
	r := bigRollout(n, batch)
	for b.Loop() {
		p := newProgress()
		v := &textView{w: io.Discard, p: p, live: true, width: 100, now: func() (t0 time.Time) { return }}
		p.apply(rolloutResp(r), v)
		for i := range n {
			id := fmt.Sprintf("node-%05d", i)
			p.apply(nodeResp(id, int32(i/batch), outpostv1.NodeState_NODE_STATE_RUNNING), v)
			p.apply(nodeResp(id, int32(i/batch), outpostv1.NodeState_NODE_STATE_SUCCEEDED), v)
			if i%batch == batch-1 {
				p.apply(rolloutResp(r), v)
				v.render()
			}
		}
	}
}

// A rollout whose batches carry node counts (a watch with node pages)
// counts like one that lists the node ids.
func TestProgressBatchNodeCounts(t *testing.T) {
	listed := bigRollout(7, 3)
	counted := proto.CloneOf(listed)
	for _, b := range counted.GetStages()[0].GetBatches() {
		b.NodeCount, b.NodeIds = int32(len(b.GetNodeIds())), nil
	}
	var got []*outpostv1.NodeCounts
	for _, r := range []*outpostv1.Rollout{listed, counted} {
		p := newProgress()
		p.apply(rolloutResp(r), nopSink{})
		p.apply(&outpostv1.WatchRolloutResponse{Event: &outpostv1.WatchRolloutResponse_NodePage{NodePage: &outpostv1.WatchNodePage{Nodes: []*outpostv1.RolloutNode{
			{NodeId: "node-00000", Stage: "rolling", Batch: 0, State: outpostv1.NodeState_NODE_STATE_SUCCEEDED},
			{NodeId: "node-00004", Stage: "rolling", Batch: 1, State: outpostv1.NodeState_NODE_STATE_RUNNING},
		}}}}, nopSink{})
		// The same rollout again is the same shape: no recount.
		p.apply(rolloutResp(r), nopSink{})
		got = append(got, p.counts().proto())
	}
	want := &outpostv1.NodeCounts{Total: 7, Pending: 5, Running: 1, Succeeded: 1}
	for i, c := range got {
		if diff := cmp.Diff(want, c, protocmp.Transform()); diff != "" {
			t.Errorf("rollout %d: counts (-want +got):\n%s", i, diff)
		}
	}
}

package rollout_test

import (
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/testing/protocmp"
)

// idsOf returns the node ids of assignments, sorted.
func idsOf(as []*outpostv1.Assignment) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.GetNode().GetId())
	}
	sort.Strings(out)
	return out
}

func TestFailureBudgetAborts(t *testing.T) {
	// 10 nodes, batches of 2, at most 10% may fail: one failure (10%) is
	// within the budget; the second (20%) is more than it and aborts.
	h := newHarness(t, nil)
	h.addNodes(10, "dc1")
	id := h.create(rollingPlan("2", 10), approved)
	gw := h.connect("gw", "dc1", 10)

	b0 := gw.waitAssigned(2)
	sort.Slice(b0, func(i, j int) bool { return b0[i].GetNode().GetId() < b0[j].GetNode().GetId() })
	gw.finish(b0[0], nodeFailed, "precheck: disk 97% used")
	if n := gw.pending(); n != 0 {
		t.Fatalf("%d assignments of the next batch before the batch finished", n)
	}
	gw.finish(b0[1], nodeSucceeded, "")
	b1 := gw.waitAssigned(2)
	sort.Slice(b1, func(i, j int) bool { return b1[i].GetNode().GetId() < b1[j].GetNode().GetId() })
	if got, want := idsOf(b1), []string{nodeID(2), nodeID(3)}; !slices.Equal(got, want) {
		t.Fatalf("second batch = %v, want %v (1 of 10 failed is within 10%%)", got, want)
	}

	// Over budget: the rollout aborts, but the node still running finishes.
	gw.finish(b1[0], outpostv1.NodeState_NODE_STATE_ROLLED_BACK, "health: 503")
	r := h.rollout(id)
	if r.GetState() != running || r.GetMessage() != "stage rolling: 2 of 10 nodes failed (20% > 10%)" ||
		r.GetNodeCounts().GetRunning() != 1 || r.GetStages()[0].GetState() != outpostv1.StageState_STAGE_STATE_FAILED {
		t.Fatalf("over budget with a node still running: %v %q, counts %v, stage %v; want RUNNING, aborting, stage FAILED",
			r.GetState(), r.GetMessage(), r.GetNodeCounts(), r.GetStages()[0].GetState())
	}
	gw.finish(b1[1], nodeSucceeded, "")
	r = h.rollout(id)
	want := &outpostv1.NodeCounts{Total: 10, Succeeded: 2, Failed: 1, RolledBack: 1, Skipped: 6}
	if r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED {
		t.Errorf("once no node runs: %v, want ABORTED", r.GetState())
	}
	if diff := cmp.Diff(want, r.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("node counts (-want +got):\n%s", diff)
	}
	if n := gw.pending(); n != 0 {
		t.Errorf("%d nodes were assigned after the budget was crossed", n)
	}
}

func TestGatewayCapacity(t *testing.T) {
	h := newHarness(t, nil)
	h.addNodes(5, "dc1")
	id := h.create(rollingPlan("100%", 0), approved)
	gw := h.connect("gw", "dc1", 2)
	for done := 0; done < 5; {
		got := gw.waitAssigned(min(2, 5-done))
		// What the first result frees is taken at once; the ack of the
		// last result comes after what it started.
		for _, a := range got {
			gw.finish(a, nodeSucceeded, "")
		}
		done += len(got)
		if n, want := gw.pending(), min(2, 5-done); n != want {
			t.Fatalf("after %d done: %d assignments waiting, want %d (capacity 2)", done, n, want)
		}
	}
	h.waitRollout(id, "SUCCEEDED", stateIs(succeeded))

	// A connected gateway is present in etcd (lease-bound, for when the
	// leader dies); gone once it left.
	hello := &outpostv1.GatewayHello{}
	if found, _, err := h.store.Get(h.ctx(), store.GatewayKey("gw"), hello); err != nil || !found || hello.GetDatacenter() != "dc1" || hello.GetCapacity() != 2 {
		t.Errorf("presence of gw = %v, %v, %v", hello, found, err)
	}
	gw.disconnect()
	h.settle()
	if found, _, err := h.store.Get(h.ctx(), store.GatewayKey("gw"), hello); err != nil || found {
		t.Errorf("presence of gw after it left: found %v, %v", found, err)
	}
}

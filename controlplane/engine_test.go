package controlplane

import (
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestRollingBatchesInOrder(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 20, nil)
	digest := upload(t, c, "billing-api-1.4.2.tar.gz", []byte("release 1.4.2"))
	gw := newFakeGateway(t, "gw-dc1", "dc1", 50)
	gw.connect(s.Addr())
	defer gw.disconnect()

	r := createRollout(t, c, rollingPlan("5", 10), digest)
	if r.GetId() == "" || r.GetRevision() != 1 || r.GetReleaseId() != "r1-"+digest[:8] {
		t.Fatalf("created rollout id %q revision %d release %q", r.GetId(), r.GetRevision(), r.GetReleaseId())
	}
	for b := 0; b < 4; b++ {
		got := gw.waitAssigned(5)
		var want []string
		for i := b * 5; i < b*5+5; i++ {
			want = append(want, nodeID(i))
		}
		ids := idsOf(got)
		sort.Strings(ids)
		if diff := cmp.Diff(want, ids); diff != "" {
			t.Fatalf("batch %d nodes (-want +got):\n%s", b, diff)
		}
		for _, a := range got {
			if a.GetEpoch() != gw.welcome.GetEpoch() || a.GetBatch() != int32(b) || a.GetStage() != "rolling" ||
				a.GetRelease().GetId() != r.GetReleaseId() || a.GetRolloutId() != r.GetId() ||
				a.GetOwner() != "cp-test/"+r.GetId() || a.GetNode().GetAddress() == "" || a.GetDeploy().GetPath() != "app" {
				t.Fatalf("assignment %v", a)
			}
		}
		// Four of five done: the next batch must wait for the fifth.
		for _, a := range got[:4] {
			gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
		}
		// The ack of the last result comes after what the results started.
		gw.waitAcked()
		if n := gw.pending(); n != 0 {
			t.Fatalf("batch %d: %d assignments of the next batch arrived before the batch finished", b, n)
		}
		gw.finishNode(got[4].GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	}
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	want := &outpostv1.NodeCounts{Total: 20, Succeeded: 20}
	if diff := cmp.Diff(want, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("node counts (-want +got):\n%s", diff)
	}
	st := done.GetStages()[0]
	if st.GetState() != outpostv1.StageState_STAGE_STATE_SUCCEEDED || st.GetCurrentBatch() != 3 || st.GetEndTime() == nil {
		t.Errorf("stage = %v", st)
	}
	for id, n := range rolloutNodes(t, c, r.GetId()) {
		if n.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || n.GetGateway() != "gw-dc1" || n.GetStep() != outpostv1.Step_STEP_UNLOCK || n.GetRelease() != r.GetReleaseId() {
			t.Errorf("node %s = %v", id, n)
		}
	}
	for id, n := range gw.counts() {
		if n != 1 {
			t.Errorf("node %s assigned %d times, want 1", id, n)
		}
	}
	gw.waitAcked()
	rev := &outpostv1.Revision{}
	if found, _, err := s.store.Get(ctxT(t), store.RevisionKey("billing-api", 1), rev); err != nil || !found ||
		rev.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || rev.GetRolloutId() != r.GetId() || rev.GetReleaseId() != r.GetReleaseId() {
		t.Errorf("revision 1 = %v (found %v, %v)", rev, found, err)
	}
}

func TestWaitsForGatewayOfDatacenter(t *testing.T) {
	logs := &countingHandler{counts: map[string]int{}}
	clk := newFakeClock()
	s := startCP(t, t.TempDir(), withLogger(slog.New(logs)), withClock(clk))
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, func(i int) string {
		if i%2 == 0 {
			return "seoul-1"
		}
		return "busan-1"
	})
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	seoul := newFakeGateway(t, "gw-seoul", "seoul-1", 10)
	seoul.auto = succeedAll
	seoul.connect(s.Addr())
	defer seoul.disconnect()

	r := createRollout(t, c, rollingPlan("100%", 0), digest)
	waitRollout(t, c, r.GetId(), "waiting message", func(r *outpostv1.Rollout) bool {
		return r.GetMessage() == "waiting for a gateway in datacenter busan-1" && r.GetNodeCounts().GetSucceeded() == 2
	})
	nodes := rolloutNodes(t, c, r.GetId())
	for i := 1; i < 4; i += 2 {
		n := nodes[nodeID(i)]
		if n.GetState() != outpostv1.NodeState_NODE_STATE_PENDING || n.GetError() != "waiting for a gateway in datacenter busan-1" {
			t.Errorf("busan node %s = %v", nodeID(i), n)
		}
	}
	if got := seoul.counts(); len(got) != 2 || got[nodeID(0)] != 1 || got[nodeID(2)] != 1 {
		t.Errorf("seoul gateway got %v, want only the seoul nodes", got)
	}
	// Waiting is a status, not an error loop: logged once per GatewayWaitLog.
	advance(t, clk, DefaultGatewayWaitLog-2*engineTick)
	if n := logs.count("waiting for a gateway"); n != 1 {
		t.Errorf("logged %d times within 30s that nodes wait for a gateway, want once", n)
	}
	advance(t, clk, 2*engineTick)
	if n := logs.count("waiting for a gateway"); n != 2 {
		t.Errorf("logged %d times after 30s that nodes wait for a gateway, want twice", n)
	}

	busan := newFakeGateway(t, "gw-busan", "busan-1", 10)
	busan.auto = succeedAll
	busan.connect(s.Addr())
	defer busan.disconnect()
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetMessage() != "" || done.GetNodeCounts().GetSucceeded() != 4 {
		t.Errorf("done: message %q counts %v", done.GetMessage(), done.GetNodeCounts())
	}
	for i := 1; i < 4; i += 2 {
		if n := rolloutNodes(t, c, r.GetId())[nodeID(i)]; n.GetError() != "" || n.GetGateway() != "gw-busan" {
			t.Errorf("busan node %s = %v", nodeID(i), n)
		}
	}
}

func TestExplicitStages(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 6, nil) // tier = i%3+1
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s.Addr())
	defer gw.disconnect()
	spec := rollingPlan("", 0)
	spec.Strategy = &outpostv1.PlanStrategy{MaxFailPercent: ptr(int32(50)), Stages: []*outpostv1.PlanStage{
		{Name: "canary", Count: 1},
		{Name: "nothing", Selector: map[string]string{"tier": "9"}},
		{Name: "tier1", Selector: map[string]string{"tier": "1"}, Batch: "100%"},
		{Name: "rest", Batch: "2", MaxFailPercent: ptr(int32(0))},
	}}
	r := createRollout(t, c, spec, digest)

	canary := gw.waitAssigned(1)[0]
	if canary.GetStage() != "canary" || canary.GetNode().GetId() != nodeID(0) {
		t.Fatalf("first assignment: stage %s node %s, want canary %s", canary.GetStage(), canary.GetNode().GetId(), nodeID(0))
	}
	gw.finishNode(nodeID(0), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	// The empty stage passes; tier1 holds only srv-0003, as the canary
	// took srv-0000 first.
	t1 := gw.waitAssigned(1)[0]
	if t1.GetStage() != "tier1" || t1.GetNode().GetId() != nodeID(3) {
		t.Fatalf("tier1 assignment: stage %s node %s", t1.GetStage(), t1.GetNode().GetId())
	}
	mid := waitRollout(t, c, r.GetId(), "tier1 running", func(r *outpostv1.Rollout) bool { return r.GetCurrentStage() == 2 })
	var states []string
	for _, st := range mid.GetStages() {
		states = append(states, st.GetName()+"="+rolloutstate.StageName(st.GetState()))
	}
	if want := []string{"canary=SUCCEEDED", "nothing=SUCCEEDED", "tier1=RUNNING", "rest=PENDING"}; !slices.Equal(states, want) {
		t.Errorf("stages = %v, want %v", states, want)
	}
	gw.finishNode(nodeID(3), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	rest := idsOf(gw.waitAssigned(2))
	sort.Strings(rest)
	if want := []string{nodeID(1), nodeID(2)}; !slices.Equal(rest, want) {
		t.Fatalf("rest batch 0 = %v, want %v", rest, want)
	}
	// rest (srv-0001, 0002, 0004, 0005) allows no failure: the first
	// aborts the rollout and its second batch is skipped.
	gw.finishNode(nodeID(1), outpostv1.NodeState_NODE_STATE_FAILED, "lock held")
	gw.finishNode(nodeID(2), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	done := waitRollout(t, c, r.GetId(), "ABORTED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_ABORTED))
	if !strings.Contains(done.GetMessage(), "stage rest: 1 of 4 nodes failed (25% > 0%)") {
		t.Errorf("message = %q", done.GetMessage())
	}
	want := &outpostv1.NodeCounts{Total: 6, Succeeded: 3, Failed: 1, Skipped: 2}
	if diff := cmp.Diff(want, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if st := done.GetStages()[3]; st.GetState() != outpostv1.StageState_STAGE_STATE_FAILED || st.GetNodeCounts().GetSkipped() != 2 {
		t.Errorf("rest stage = %v", st)
	}
}

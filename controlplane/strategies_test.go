package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
)

// These tests drive the rollout engine's strategies and verbs through the
// real API with a fake gateway (fakegateway_test.go); e2e/ runs the same
// features against an SSH fleet.

// applyLabeled adds n nodes labelled app=billing-api plus labels(i).
func applyLabeled(t *testing.T, c *client, n int, labels func(i int) map[string]string) {
	t.Helper()
	var nodes []*outpostv1.Node
	for i := range n {
		l := map[string]string{"app": "billing-api"}
		for k, v := range labels(i) {
			l[k] = v
		}
		nodes = append(nodes, &outpostv1.Node{
			Id: nodeID(i), Address: fmt.Sprintf("127.0.%d.%d:22", 10+i/250, 1+i%250), Datacenter: "dc1", User: "deploy", Labels: l,
		})
	}
	if _, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: nodes}); err != nil {
		t.Fatalf("ApplyNodes: %v", err)
	}
}

// kindAuto answers every assignment at once: deployments as deploy says
// (nil: succeed), health checks as check says (nil: healthy), the rest
// succeed. It records the assignments of each kind.
type kindAuto struct {
	mu     sync.Mutex
	deploy func(a *outpostv1.Assignment) (outpostv1.NodeState, string)
	check  func(a *outpostv1.Assignment) (outpostv1.NodeState, string)
	byKind map[outpostv1.AssignmentKind][]*outpostv1.Assignment
}

func (k *kindAuto) answer(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
	k.mu.Lock()
	if k.byKind == nil {
		k.byKind = map[outpostv1.AssignmentKind][]*outpostv1.Assignment{}
	}
	kind := a.GetKind()
	k.byKind[kind] = append(k.byKind[kind], a)
	deploy, check := k.deploy, k.check
	k.mu.Unlock()
	switch kind {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY:
		if deploy != nil {
			return deploy(a)
		}
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_HEALTH_CHECK:
		if check != nil {
			return check(a)
		}
	}
	return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
}

func (k *kindAuto) of(kind outpostv1.AssignmentKind) []*outpostv1.Assignment {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.byKind[kind])
}

// failNodes fails the deployments of the named nodes.
func failNodes(ids ...string) func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
	return func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		if slices.Contains(ids, a.GetNode().GetId()) {
			return outpostv1.NodeState_NODE_STATE_FAILED, "precheck: disk full"
		}
		return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	}
}

func stageStates(r *outpostv1.Rollout) []string {
	var out []string
	for _, st := range r.GetStages() {
		out = append(out, st.GetName()+"="+rolloutstate.StageName(st.GetState()))
	}
	return out
}

func TestTieredFailureBudget(t *testing.T) {
	// 2 tier-1 nodes (0-1), 10 tier-2 (2-11), 10 tier-3 (12-21). The
	// budget is "more than": 1 of 10 (10%) continues, 2 of 10 (20%) abort.
	// Tier 1 is strict: any failure aborts.
	tierOf := func(i int) map[string]string {
		switch {
		case i < 2:
			return map[string]string{"tier": "1"}
		case i < 12:
			return map[string]string{"tier": "2"}
		}
		return map[string]string{"tier": "3"}
	}
	tests := []struct {
		name   string
		fail   []string
		state  outpostv1.RolloutState
		counts *outpostv1.NodeCounts
		stages []string
		msg    string
	}{
		{"at the budget in tier 2 and 3", []string{nodeID(2), nodeID(12)}, outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
			&outpostv1.NodeCounts{Total: 22, Succeeded: 20, Failed: 2},
			[]string{"tier1=SUCCEEDED", "tier2=SUCCEEDED", "tier3=SUCCEEDED"}, ""},
		{"over the budget in tier 3", []string{nodeID(5), nodeID(13), nodeID(21)}, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
			&outpostv1.NodeCounts{Total: 22, Succeeded: 19, Failed: 3},
			[]string{"tier1=SUCCEEDED", "tier2=SUCCEEDED", "tier3=FAILED"}, "stage tier3: 2 of 10 nodes failed (20% > 10%)"},
		{"tier 1 is strict", []string{nodeID(0)}, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
			&outpostv1.NodeCounts{Total: 22, Failed: 1, Skipped: 21},
			[]string{"tier1=FAILED", "tier2=SKIPPED", "tier3=SKIPPED"}, "stage tier1: 1 of 2 nodes failed (50% > 0%)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startCP(t, t.TempDir())
			c := dial(t, s.Addr())
			applyLabeled(t, c, 22, tierOf)
			digest := upload(t, c, "a.tar.gz", []byte("a"))
			k := &kindAuto{deploy: failNodes(tt.fail...)}
			gw := newFakeGateway(t, "gw", "dc1", 50)
			gw.auto = k.answer
			gw.connect(s.Addr())
			defer gw.disconnect()
			spec := rollingPlan("", 0)
			spec.Strategy = &outpostv1.PlanStrategy{Type: "tiered"}
			r := createRollout(t, c, spec, digest)
			done := waitRollout(t, c, r.GetId(), "the end", func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
			if done.GetState() != tt.state || done.GetMessage() != tt.msg {
				t.Errorf("rollout ended %v %q, want %v %q", done.GetState(), done.GetMessage(), tt.state, tt.msg)
			}
			if diff := cmp.Diff(tt.counts, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
				t.Errorf("node counts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.stages, stageStates(done)); diff != "" {
				t.Errorf("stages (-want +got):\n%s", diff)
			}
		})
	}
}

// canaryPlan is a canary of one node with a bake and health checks every 50ms.
func canaryPlan(bake, pause string) *outpostv1.PlanSpec {
	spec := rollingPlan("", 0)
	spec.Health.Interval, spec.Health.Timeout = "50ms", "1s"
	spec.Strategy = &outpostv1.PlanStrategy{Type: "canary", Count: 1, Bake: bake, Pause: pause, Batch: "100%", MaxFailPercent: ptr(int32(0))}
	return spec
}

func TestCanaryBakeThenManualPromotion(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	k := &kindAuto{}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = k.answer
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, canaryPlan("500ms", "manual"), digest)
	if st := r.GetStages()[0]; st.GetBake().AsDuration() != 500*time.Millisecond || !st.GetManualPause() {
		t.Fatalf("canary stage = %v", st)
	}

	baking := waitRollout(t, c, r.GetId(), "the bake", func(r *outpostv1.Rollout) bool {
		return r.GetStages()[0].GetState() == outpostv1.StageState_STAGE_STATE_BAKING
	})
	if baking.GetStages()[0].GetBakeEndTime() == nil {
		t.Errorf("baking stage has no bake end: %v", baking.GetStages()[0])
	}
	waiting := waitRollout(t, c, r.GetId(), "PAUSED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED))
	if st := waiting.GetStages()[0].GetState(); st != outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION ||
		!strings.Contains(waiting.GetMessage(), "waiting for promotion") || waiting.GetNodeCounts().GetSucceeded() != 1 {
		t.Fatalf("after the bake: stage %v, message %q, counts %v", st, waiting.GetMessage(), waiting.GetNodeCounts())
	}
	// A bake ends only after a healthy round; how many rounds fit in it
	// depends on the machine's speed here, and is counted on a fake clock
	// in controlplane/rollout's TestBakeLastsItsDuration.
	checks := k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_HEALTH_CHECK)
	if len(checks) == 0 {
		t.Errorf("no health check during the bake")
	}
	for _, a := range checks {
		if a.GetNode().GetId() != nodeID(0) || a.GetStage() != "canary" {
			t.Errorf("health check of %s in %s, want the canary %s", a.GetNode().GetId(), a.GetStage(), nodeID(0))
		}
	}
	if n := len(k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY)); n != 1 {
		t.Fatalf("%d deployments before the promotion, want only the canary", n)
	}

	_, err := c.ResumeRollout(ctxT(t), &outpostv1.ResumeRolloutRequest{Id: r.GetId()})
	wantCode(t, "resume instead of promote", err, codes.FailedPrecondition, "promote")
	_, err = c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId(), Stage: "rest"})
	wantCode(t, "promote the wrong stage", err, codes.FailedPrecondition, "stage canary waits")
	p, err := c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId(), Stage: "canary"})
	if err != nil || p.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("promote = %v, %v", p.GetRollout().GetState(), err)
	}
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if diff := cmp.Diff([]string{"canary=SUCCEEDED", "rest=SUCCEEDED"}, stageStates(done)); diff != "" || done.GetNodeCounts().GetSucceeded() != 4 {
		t.Errorf("done: counts %v, stages (-want +got):\n%s", done.GetNodeCounts(), diff)
	}
	_, err = c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId()})
	wantCode(t, "promote a finished rollout", err, codes.FailedPrecondition, "is SUCCEEDED (stage rest SUCCEEDED); promote applies only to ")
}

func TestCanaryBakeFailureRollsBack(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 5, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	var checks int
	var mu sync.Mutex
	k := &kindAuto{check: func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		mu.Lock()
		defer mu.Unlock()
		if checks++; checks >= 3 {
			return outpostv1.NodeState_NODE_STATE_FAILED, "status 503, want 200"
		}
		return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	}}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = k.answer
	gw.connect(s.Addr())
	defer gw.disconnect()
	spec := canaryPlan("1m", "")
	spec.Strategy.Count = 2
	r := createRollout(t, c, spec, digest)

	done := waitRollout(t, c, r.GetId(), "FAILED_ROLLED_BACK", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK))
	want := &outpostv1.NodeCounts{Total: 5, RolledBack: 2, Skipped: 3}
	if diff := cmp.Diff(want, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("node counts (-want +got):\n%s", diff)
	}
	if !strings.Contains(done.GetMessage(), "health check failed during the bake of stage canary") || !strings.Contains(done.GetMessage(), "status 503") {
		t.Errorf("message = %q", done.GetMessage())
	}
	if diff := cmp.Diff([]string{"canary=FAILED", "rest=SKIPPED"}, stageStates(done)); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	nodes := rolloutNodes(t, c, r.GetId())
	for i := range 2 {
		n := nodes[nodeID(i)]
		if n.GetState() != outpostv1.NodeState_NODE_STATE_ROLLED_BACK || !n.GetRollingBack() || !strings.Contains(n.GetError(), "rolled back to") {
			t.Errorf("canary %s = %v", nodeID(i), n)
		}
	}
	var rolled []string
	for _, a := range k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK) {
		rolled = append(rolled, a.GetNode().GetId())
		if a.GetRelease().GetId() != r.GetReleaseId() {
			t.Errorf("rollback of %s leaves release %s, want %s", a.GetNode().GetId(), a.GetRelease().GetId(), r.GetReleaseId())
		}
	}
	slices.Sort(rolled)
	if diff := cmp.Diff([]string{nodeID(0), nodeID(1)}, rolled); diff != "" {
		t.Errorf("rolled back nodes (-want +got):\n%s", diff)
	}
	var deployed []string
	for _, a := range k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY) {
		deployed = append(deployed, a.GetNode().GetId())
	}
	slices.Sort(deployed)
	if diff := cmp.Diff([]string{nodeID(0), nodeID(1)}, deployed); diff != "" {
		t.Errorf("deployed nodes (-want +got): the rest must stay untouched\n%s", diff)
	}

	// Retry runs the rolled back canaries again, and only them; the
	// skipped nodes keep the rollout from succeeding.
	mu.Lock()
	checks = -1000
	mu.Unlock()
	rr, err := c.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId()})
	if err != nil || rr.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("retry = %v, %v", rr.GetRollout().GetState(), err)
	}
	// Promoting a baking stage ends its bake.
	waitRollout(t, c, r.GetId(), "the bake again", func(r *outpostv1.Rollout) bool {
		return r.GetStages()[0].GetState() == outpostv1.StageState_STAGE_STATE_BAKING
	})
	if _, err := c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId(), Stage: "canary"}); err != nil {
		t.Fatalf("promote a bake: %v", err)
	}
	again := waitRollout(t, c, r.GetId(), "the retry's end", func(r *outpostv1.Rollout) bool {
		return r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	})
	if again.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED || again.GetNodeCounts().GetSucceeded() != 2 ||
		again.GetNodeCounts().GetSkipped() != 3 || !strings.Contains(again.GetMessage(), "3 node(s) skipped") {
		t.Errorf("after the retry: %v %q %v", again.GetState(), again.GetMessage(), again.GetNodeCounts())
	}
	if n := len(k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY)); n != 4 {
		t.Errorf("%d deployments in all, want 4 (two canaries, twice)", n)
	}
}

func TestRetryFailedNodesOnly(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 6, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	var mu sync.Mutex
	failing := []string{nodeID(1), nodeID(4)}
	k := &kindAuto{deploy: func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		mu.Lock()
		defer mu.Unlock()
		if slices.Contains(failing, a.GetNode().GetId()) {
			return outpostv1.NodeState_NODE_STATE_ROLLED_BACK, "health: status 503"
		}
		return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	}}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = k.answer
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("3", 50), digest)
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetNodeCounts().GetRolledBack() != 2 {
		t.Fatalf("counts %v", done.GetNodeCounts())
	}
	_, err := c.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId(), NodeIds: []string{nodeID(0)}})
	wantCode(t, "retry a node that succeeded", err, codes.InvalidArgument, "node_ids")

	mu.Lock()
	failing = nil
	mu.Unlock()
	if _, err := c.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId(), RequestId: "retry-1"}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// The same request again is answered, not run twice.
	if _, err := c.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId(), RequestId: "retry-1"}); err != nil {
		t.Fatalf("retry with the same request id: %v", err)
	}
	again := waitRollout(t, c, r.GetId(), "SUCCEEDED again", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED && r.GetNodeCounts().GetSucceeded() == 6
	})
	if again.GetMessage() != "" {
		t.Errorf("message %q", again.GetMessage())
	}
	counts := map[string]int{}
	for _, a := range k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY) {
		counts[a.GetNode().GetId()]++
	}
	for i := range 6 {
		want := 1
		if i == 1 || i == 4 {
			want = 2
		}
		if counts[nodeID(i)] != want {
			t.Errorf("%s deployed %d times, want %d", nodeID(i), counts[nodeID(i)], want)
		}
	}
	_, err = c.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId()})
	wantCode(t, "nothing left to retry", err, codes.FailedPrecondition, "no FAILED or ROLLED_BACK node")
}

func TestPauseAndPromotionSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s1 := startCP(t, dir)
	c := dial(t, s1.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s1.Addr())
	defer gw.disconnect()
	spec := rollingPlan("", 0)
	spec.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{
		{Name: "one", Count: 1, Pause: "manual"},
		{Name: "rest", Batch: "1"},
	}}
	r := createRollout(t, c, spec, digest)
	gw.finishNode(gw.waitAssigned(1)[0].GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	waitRollout(t, c, r.GetId(), "PAUSED for promotion", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED))

	restart := func(s *Server) *Server {
		t.Helper()
		gw.waitAcked()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		gw.disconnect()
		s2 := startCP(t, dir)
		gw.connect(s2.Addr(), gw.runningIDs()...)
		return s2
	}
	s2 := restart(s1)
	c = dial(t, s2.Addr())
	gw.sync()
	got := waitRollout(t, c, r.GetId(), "PAUSED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED))
	if st := got.GetStages()[0].GetState(); st != outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION || gw.pending() != 0 {
		t.Fatalf("after a restart: stage one %v, %d new assignments; want WAITING_PROMOTION and none", st, gw.pending())
	}
	if _, err := c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId()}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	first := gw.waitAssigned(1)[0]
	p, err := c.PauseRollout(ctxT(t), &outpostv1.PauseRolloutRequest{Id: r.GetId(), Reason: "lunch"})
	if err != nil || p.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PAUSED || p.GetRollout().GetMessage() != "paused: lunch" {
		t.Fatalf("pause = %v %q, %v", p.GetRollout().GetState(), p.GetRollout().GetMessage(), err)
	}
	// The node already running finishes; nothing new starts.
	gw.finishNode(first.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	s3 := restart(s2)
	c = dial(t, s3.Addr())
	gw.sync()
	got = waitRollout(t, c, r.GetId(), "PAUSED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED))
	if got.GetNodeCounts().GetSucceeded() != 2 || got.GetNodeCounts().GetPending() != 2 || gw.pending() != 0 {
		t.Fatalf("paused across a restart: counts %v, %d new assignments", got.GetNodeCounts(), gw.pending())
	}
	_, err = c.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId()})
	wantCode(t, "promote a paused rollout", err, codes.FailedPrecondition, "is PAUSED (stage rest RUNNING); promote applies only to ")
	if _, err := c.ResumeRollout(ctxT(t), &outpostv1.ResumeRolloutRequest{Id: r.GetId()}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	for range 2 {
		gw.finishNode(gw.waitAssigned(1)[0].GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	}
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetNodeCounts().GetSucceeded() != 4 {
		t.Errorf("counts %v", done.GetNodeCounts())
	}
}

func TestApprovalFourEyesAndExpiry(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) { c.ApprovalTTL = 300 * time.Millisecond })
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 2, nil)
	digest := upload(t, admin, "a.tar.gz", []byte("a"))
	alice := userClient(t, s, "alice", pki.RoleDeployer)
	bob := userClient(t, s, "bob", pki.RoleApprover)

	spec := rollingPlan("100%", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	r := createRollout(t, alice, spec, digest)
	if r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL || r.GetRequester() != "alice" {
		t.Fatalf("created %v by %q, want PENDING_APPROVAL by alice", r.GetState(), r.GetRequester())
	}
	_, err := alice.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r.GetId()})
	wantCode(t, "a deployer approves", err, codes.PermissionDenied, "")

	// The admin may approve, but not a rollout it asked for itself.
	own := createRollout(t, admin, spec, digest)
	_, err = admin.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: own.GetId()})
	wantCode(t, "self-approval", err, codes.PermissionDenied, "another person must approve")
	if rej, err := bob.RejectRollout(ctxT(t), &outpostv1.RejectRolloutRequest{Id: own.GetId(), Reason: "wrong ticket"}); err != nil ||
		rej.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_REJECTED || rej.GetRollout().GetMessage() != "rejected by bob: wrong ticket" ||
		rej.GetRollout().GetNodeCounts().GetSkipped() != 2 {
		t.Errorf("reject = %v, %v", rej.GetRollout(), err)
	}

	// An earlier rollout of the app runs (no gateway), so the approved one
	// waits, and its approval expires.
	blocker := createRollout(t, admin, rollingPlan("100%", 0), digest)
	waitRollout(t, admin, blocker.GetId(), "RUNNING", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING))
	late := createRollout(t, alice, spec, digest)
	a, err := bob.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: late.GetId(), Comment: "ok"})
	if err != nil || a.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_APPROVED || a.GetRollout().GetApprover() != "bob" {
		t.Fatalf("approve = %v, %v", a.GetRollout(), err)
	}
	queued := waitRollout(t, admin, late.GetId(), "the queue message", func(r *outpostv1.Rollout) bool {
		return strings.Contains(r.GetMessage(), "waiting for rollout "+blocker.GetId())
	})
	if queued.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_APPROVED {
		t.Errorf("queued rollout is %v", queued.GetState())
	}
	expired := waitRollout(t, admin, late.GetId(), "the approval to expire", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL))
	if expired.GetApprover() != "" || !strings.Contains(expired.GetMessage(), "the approval by bob expired") {
		t.Errorf("expired: approver %q message %q", expired.GetApprover(), expired.GetMessage())
	}

	// Approved again once the app is free, it runs.
	if _, err := admin.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: blocker.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: late.GetId()}); err != nil {
		t.Fatal(err)
	}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = succeedAll
	gw.connect(s.Addr())
	defer gw.disconnect()
	done := waitRollout(t, admin, late.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetApprover() != "bob" || done.GetApproveTime() == nil {
		t.Errorf("done: approver %q at %v", done.GetApprover(), done.GetApproveTime())
	}
}

func TestValidationRejectRollsBack(t *testing.T) {
	s := startCP(t, t.TempDir())
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 3, nil)
	v1 := upload(t, admin, "a.tar.gz", []byte("v1"))
	v2 := upload(t, admin, "a.tar.gz", []byte("v2"))
	bob := userClient(t, s, "bob", pki.RoleApprover)
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = succeedAll
	gw.connect(s.Addr())
	defer gw.disconnect()

	first := createRollout(t, admin, rollingPlan("100%", 0), v1)
	waitRollout(t, admin, first.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	spec := rollingPlan("100%", 0)
	spec.Validation = &outpostv1.PlanValidation{Required: true}
	second := createRollout(t, admin, spec, v2)
	waitRollout(t, admin, second.GetId(), "PENDING_VALIDATION", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION))

	rej, err := bob.RejectRollout(ctxT(t), &outpostv1.RejectRolloutRequest{Id: second.GetId(), Reason: "checkout broken", RequestId: "rej-1"})
	if err != nil {
		t.Fatalf("reject: %v", err)
	}
	got := rej.GetRollout()
	if got.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_REJECTED || !strings.HasPrefix(got.GetMessage(), "rejected at validation by bob: checkout broken; rolling back with rollout r-") {
		t.Fatalf("rejected: %v %q", got.GetState(), got.GetMessage())
	}
	undoID := got.GetMessage()[strings.LastIndex(got.GetMessage(), " ")+1:]
	undo := waitRollout(t, admin, undoID, "the undo to succeed", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if undo.GetReleaseId() != first.GetReleaseId() || undo.GetSourceRevision() != 1 || undo.GetRevision() != 3 ||
		undo.GetApprover() != "bob" || undo.GetArtifact().GetSha256() != v1 {
		t.Errorf("undo: release %s (want %s) source %d revision %d approver %q", undo.GetReleaseId(), first.GetReleaseId(),
			undo.GetSourceRevision(), undo.GetRevision(), undo.GetApprover())
	}
	// The reject retried (its request_id) returns the rejected rollout;
	// a new reject is refused. Neither starts a second undo.
	if again, err := bob.RejectRollout(ctxT(t), &outpostv1.RejectRolloutRequest{Id: second.GetId(), Reason: "checkout broken", RequestId: "rej-1"}); err != nil ||
		again.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_REJECTED {
		t.Errorf("reject retried = %v, %v; want the rejected rollout", again.GetRollout(), err)
	}
	_, err = bob.RejectRollout(ctxT(t), &outpostv1.RejectRolloutRequest{Id: second.GetId()})
	wantCode(t, "reject again", err, codes.FailedPrecondition, "is REJECTED; reject applies only to PENDING_APPROVAL or PENDING_VALIDATION")
	revs, err := admin.ListRevisions(ctxT(t), &outpostv1.ListRevisionsRequest{App: "billing-api", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, rv := range revs.GetRevisions() {
		list = append(list, fmt.Sprintf("%d:%s:%d", rv.GetRevision(), rolloutstate.Name(rv.GetState()), rv.GetSourceRevision()))
	}
	if diff := cmp.Diff([]string{"3:SUCCEEDED:1", "2:REJECTED:0"}, list); diff != "" || revs.GetNextPageToken() == "" {
		t.Errorf("revisions page 1 (token %q) (-want +got):\n%s", revs.GetNextPageToken(), diff)
	}
	more, err := admin.ListRevisions(ctxT(t), &outpostv1.ListRevisionsRequest{App: "billing-api", PageSize: 2, PageToken: revs.GetNextPageToken()})
	if err != nil || len(more.GetRevisions()) != 1 || more.GetRevisions()[0].GetRevision() != 1 || more.GetNextPageToken() != "" {
		t.Errorf("revisions page 2 = %v, %v", more, err)
	}

	// Validating needs a rollout waiting for it.
	_, err = bob.ValidateRollout(ctxT(t), &outpostv1.ValidateRolloutRequest{Id: second.GetId()})
	wantCode(t, "validate a rejected rollout", err, codes.FailedPrecondition, "REJECTED")
	third := createRollout(t, admin, spec, v2)
	waitRollout(t, admin, third.GetId(), "PENDING_VALIDATION", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION))
	ok, err := bob.ValidateRollout(ctxT(t), &outpostv1.ValidateRolloutRequest{Id: third.GetId(), Comment: "looks good"})
	if err != nil || ok.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED || ok.GetRollout().GetMessage() != "validated by bob: looks good" {
		t.Errorf("validate = %v, %v", ok.GetRollout(), err)
	}
}

func TestUndoAndDryRun(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 3, nil)
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = succeedAll
	gw.connect(s.Addr())
	defer gw.disconnect()
	var rs []*outpostv1.Rollout
	for _, v := range []string{"v1", "v2", "v3"} {
		r := createRollout(t, c, rollingPlan("100%", 0), upload(t, c, "a.tar.gz", []byte(v)))
		rs = append(rs, waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED)))
	}

	dry, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api"}, DryRun: true})
	if err != nil || dry.GetRollout().GetId() != "" || dry.GetRollout().GetReleaseId() != rs[1].GetReleaseId() || dry.GetRollout().GetSourceRevision() != 2 {
		t.Fatalf("dry undo = %v, %v; want revision 2's release", dry.GetRollout(), err)
	}
	list, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil || len(list.GetRollouts()) != 3 {
		t.Errorf("after a dry undo: %d rollouts, %v; want 3", len(list.GetRollouts()), err)
	}
	undo, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api", ToRevision: 1}})
	if err != nil {
		t.Fatalf("undo: %v", err)
	}
	u := waitRollout(t, c, undo.GetRollout().GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if u.GetReleaseId() != rs[0].GetReleaseId() || u.GetRevision() != 4 || u.GetSourceRevision() != 1 {
		t.Errorf("undo to 1: release %s revision %d source %d", u.GetReleaseId(), u.GetRevision(), u.GetSourceRevision())
	}

	for _, tc := range []struct {
		name string
		req  *outpostv1.CreateRolloutRequest
		code codes.Code
		want string
	}{
		{"current revision", &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api", ToRevision: 4}}, codes.FailedPrecondition, "current revision"},
		{"unknown revision", &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api", ToRevision: 9}}, codes.NotFound, "no revision 9"},
		{"unknown app", &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "nope"}}, codes.NotFound, "no revisions"},
		{"plan with undo", &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api"}, Plan: rollingPlan("1", 0)}, codes.InvalidArgument, "plan"},
	} {
		_, err := c.CreateRollout(ctxT(t), tc.req)
		wantCode(t, tc.name, err, tc.code, tc.want)
	}
}

func TestBlueGreenSwitchAndSwitchBack(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyLabeled(t, c, 4, func(i int) map[string]string { return map[string]string{"color": []string{"blue", "green"}[i%2]} })
	if _, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: []*outpostv1.Node{
		{Id: "lb-1", Address: "127.0.20.1:22", Datacenter: "dc1", User: "deploy", Labels: map[string]string{"role": "lb"}},
	}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failSwitch := false
	k := &kindAuto{}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		mu.Lock()
		fail := failSwitch && a.GetKind() == outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK && a.GetHook() == "sh lb/switch"
		mu.Unlock()
		st, msg := k.answer(a)
		if fail {
			return outpostv1.NodeState_NODE_STATE_FAILED, "hook switch: exit status 1: lb is down"
		}
		return st, msg
	}
	gw.connect(s.Addr())
	defer gw.disconnect()
	spec := rollingPlan("", 0)
	spec.Strategy = &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb-1", SwitchHook: "sh lb/switch", SwitchBackHook: "sh lb/back"}
	digest := upload(t, c, "a.tar.gz", []byte("v1"))

	r := createRollout(t, c, spec, digest)
	if bg := r.GetBlueGreen(); bg.GetTargetColor() != "blue" || bg.GetLiveColor() != "" {
		t.Fatalf("first blue/green = %v", bg)
	}
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if diff := cmp.Diff([]string{"blue=SUCCEEDED", "switch=SUCCEEDED"}, stageStates(done)); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	hooks := k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK)
	if len(hooks) != 1 || hooks[0].GetNode().GetId() != "lb-1" || hooks[0].GetHookEnv()["OUTPOST_COLOR"] != "blue" {
		t.Fatalf("switch hooks = %v", hooks)
	}

	// The next one goes to green; its switch fails and is switched back.
	mu.Lock()
	failSwitch = true
	mu.Unlock()
	r2 := createRollout(t, c, spec, upload(t, c, "a.tar.gz", []byte("v2")))
	if bg := r2.GetBlueGreen(); bg.GetTargetColor() != "green" || bg.GetLiveColor() != "blue" {
		t.Fatalf("second blue/green = %v", bg)
	}
	failed := waitRollout(t, c, r2.GetId(), "FAILED_ROLLED_BACK", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK))
	if !strings.Contains(failed.GetMessage(), "traffic switch to green failed on lb-1") || !strings.Contains(failed.GetMessage(), "switching traffic back to blue") {
		t.Errorf("message = %q", failed.GetMessage())
	}
	hooks = k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK)
	var ran []string
	for _, h := range hooks[1:] {
		ran = append(ran, h.GetHook()+" "+h.GetHookEnv()["OUTPOST_COLOR"])
	}
	if diff := cmp.Diff([]string{"sh lb/switch green", "sh lb/back blue"}, ran); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
	if n := rolloutNodes(t, c, r2.GetId())["lb-1"]; n.GetState() != outpostv1.NodeState_NODE_STATE_ROLLED_BACK {
		t.Errorf("switch node = %v", n)
	}
	mu.Lock()
	failSwitch = false
	mu.Unlock()

	// Blue still serves and holds v1; green got v2 (unswitched). A new
	// rollout deploys green and switches; undo then only switches back.
	r3 := createRollout(t, c, spec, upload(t, c, "a.tar.gz", []byte("v3")))
	waitRollout(t, c, r3.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	undo, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: "billing-api"}})
	if err != nil {
		t.Fatalf("undo: %v", err)
	}
	u := undo.GetRollout()
	if bg := u.GetBlueGreen(); !bg.GetSwitchBack() || bg.GetTargetColor() != "blue" || u.GetReleaseId() != r.GetReleaseId() || len(u.GetStages()) != 1 {
		t.Fatalf("undo = %v", u)
	}
	waitRollout(t, c, u.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	hooks = k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK)
	if last := hooks[len(hooks)-1]; last.GetHook() != "sh lb/back" || last.GetHookEnv()["OUTPOST_COLOR"] != "blue" || last.GetHookEnv()["OUTPOST_PREVIOUS_COLOR"] != "green" {
		t.Errorf("undo ran %q with %v", last.GetHook(), last.GetHookEnv())
	}
	var deployed int
	for _, a := range k.of(outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY) {
		if a.GetRolloutId() == u.GetId() {
			deployed++
		}
	}
	if deployed != 0 {
		t.Errorf("the switch-back undo deployed %d nodes", deployed)
	}
}

func TestMaxParallelPerGateway(t *testing.T) {
	// A batch of 6 with max_parallel 1 and two gateways of the datacenter:
	// one node at a time through each gateway, so two at once.
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 6, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gws := []*fakeGateway{newFakeGateway(t, "gw-1", "dc1", 10), newFakeGateway(t, "gw-2", "dc1", 10)}
	for _, g := range gws {
		g.connect(s.Addr())
		defer g.disconnect()
	}
	spec := rollingPlan("", 0)
	spec.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "all", Batch: "100%", MaxParallel: 1}}}
	r := createRollout(t, c, spec, digest)
	for round := range 3 {
		// Both gateways run one node at the same time, and no more.
		var running []*outpostv1.Assignment
		for _, g := range gws {
			running = append(running, g.waitAssigned(1)[0])
		}
		for _, g := range gws {
			g.sync()
		}
		for i, g := range gws {
			if n := g.pending(); n != 0 {
				t.Fatalf("round %d: gateway %s got %d more while one runs (max_parallel 1 per gateway)", round, g.name, n)
			}
			g.finishNode(running[i].GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
		}
	}
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetNodeCounts().GetSucceeded() != 6 {
		t.Errorf("counts %v", done.GetNodeCounts())
	}
}

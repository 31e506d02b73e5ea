package rollout_test

import (
	"context"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// desired reads node nodeID's desired release record; nil when none.
func (h *harness) desired(nodeID string) *outpostv1.NodeDesired {
	h.t.Helper()
	d := &outpostv1.NodeDesired{}
	found, _, err := h.store.Get(h.ctx(), store.NodeDesiredKey(nodeID), d)
	if err != nil {
		h.t.Fatalf("desired release of %s: %v", nodeID, err)
	}
	if !found {
		return nil
	}
	return d
}

// wantDesired checks that node nodeID's desired release is release, as
// activated by rollout.
func (h *harness) wantDesired(nodeID, release, rolloutID string) {
	h.t.Helper()
	d := h.desired(nodeID)
	if d.GetRelease() != release || d.GetRolloutId() != rolloutID || d.GetApp() != "billing-api" || d.GetPath() != "app" {
		h.t.Errorf("desired release of %s = %v; want %s of rollout %s, app billing-api at app", nodeID, d, release, rolloutID)
	}
}

func TestDesiredReleaseSurvivesLeaderChange(t *testing.T) {
	// The leader is lost right after a node's success is durable, before
	// it did anything else: the node's desired release is durable with
	// its result, and the next leader finishes the rollout and records
	// the other node's.
	type seen struct {
		node    string
		desired *outpostv1.NodeDesired
	}
	var (
		h      *harness
		lose   atomic.Pointer[term]
		atLoss = make(chan seen, 1)
	)
	h = newHarness(t, func(c *rollout.Config) {
		c.OnNodeResult = func(ctx context.Context, _ string, n *outpostv1.RolloutNode) {
			tm := lose.Swap(nil)
			if tm == nil {
				return
			}
			d := &outpostv1.NodeDesired{}
			if found, _, err := h.store.Get(ctx, store.NodeDesiredKey(n.GetNodeId()), d); err != nil || !found {
				d = nil
			}
			atLoss <- seen{node: n.GetNodeId(), desired: d}
			close(tm.lost)
			if err := tm.lead.Resign(ctx); err != nil {
				t.Errorf("resign: %v", err)
			}
		}
	})
	lose.Store(h.term)
	first := h.term
	h.addNodes(2, "dc1")
	id := h.create(rollingPlan("1", 0), approved)
	gw := h.connect("gw", "dc1", 10)
	a := gw.waitAssigned(1)[0]
	gw.answer(a, nodeSucceeded, "")
	var s seen
	select {
	case s = <-atLoss:
	case <-time.After(waitLimit):
		t.Fatalf("no node result within %v", waitLimit)
	}
	if s.node != a.GetNode().GetId() || s.desired.GetRelease() != "r1-test" {
		t.Fatalf("when %s's success was durable its desired release was %v; want r1-test", s.node, s.desired)
	}
	select {
	case <-first.lead.Done():
	case <-time.After(waitLimit):
		t.Fatalf("leadership not lost within %v", waitLimit)
	}
	gw.disconnect()

	h.startTerm("cp-2", nil)
	gw2 := h.connect("gw", "dc1", 10)
	b := gw2.waitAssigned(1)[0]
	gw2.finish(b, nodeSucceeded, "")
	h.waitRollout(id, "SUCCEEDED", stateIs(succeeded))
	h.wantDesired(nodeID(0), "r1-test", id)
	h.wantDesired(nodeID(1), "r1-test", id)
	if d := h.desired(nodeID(0)); d.GetSha256() != "00" {
		t.Errorf("desired digest = %q, want the rollout artifact's 00", d.GetSha256())
	}
}

func TestDesiredReleaseFollowsRollbacks(t *testing.T) {
	// What a rollout leaves current on each node: a success its release;
	// a failure before the switch what was there; a node the deployment
	// rolled back, or the engine rolled back after a failed bake, its
	// previous release.
	h := newHarness(t, nil)
	h.addNodes(3, "dc1")
	gw := h.connect("gw", "dc1", 10)
	first := h.create(rollingPlan("100%", 0), approved)
	for _, a := range gw.waitAssigned(3) {
		gw.finish(a, nodeSucceeded, "")
	}
	h.waitRollout(first, "SUCCEEDED", stateIs(succeeded))
	for i := range 3 {
		h.wantDesired(nodeID(i), "r1-test", first)
	}

	spec := rollingPlan("", 0)
	spec.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "all", Batch: "100%", Bake: "10s", MaxFailPercent: ptr[int32](100)}}}
	second := h.create(spec, approved)
	as := gw.waitAssigned(3)
	sort.Slice(as, func(i, j int) bool { return as[i].GetNode().GetId() < as[j].GetNode().GetId() })
	gw.finish(as[0], nodeSucceeded, "")
	gw.finish(as[1], outpostv1.NodeState_NODE_STATE_ROLLED_BACK, "health: 503")
	gw.finish(as[2], nodeFailed, "precheck: disk full")
	h.wantDesired(nodeID(0), "r2-test", second)
	h.wantDesired(nodeID(1), "previous", second)
	h.wantDesired(nodeID(2), "r1-test", first)

	// The bake's health check fails: the engine rolls node 0 back.
	h.advance(2 * time.Second)
	check := gw.waitAssigned(1)[0]
	gw.finish(check, nodeFailed, "status 503")
	back := gw.waitAssigned(1)[0]
	if back.GetKind() != outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK {
		t.Fatalf("after the failed bake: %v, want ROLLBACK", back.GetKind())
	}
	h.wantDesired(nodeID(0), "r2-test", second) // not rolled back yet
	gw.finish(back, nodeSucceeded, "")
	h.wantDesired(nodeID(0), "previous", second)
	h.wantDesired(nodeID(2), "r1-test", first)
}

func ptr[T any](v T) *T { return &v }

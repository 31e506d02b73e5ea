package rollout_test

import (
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/rollout"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Tests of what the engine does when time passes, on the fake clock: each
// checks the state just before the moment and at it.

const (
	approved        = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED
	pendingApproval = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
	running         = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	succeeded       = outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED
	nodeRunning     = outpostv1.NodeState_NODE_STATE_RUNNING
	nodePending     = outpostv1.NodeState_NODE_STATE_PENDING
	nodeSucceeded   = outpostv1.NodeState_NODE_STATE_SUCCEEDED
	nodeFailed      = outpostv1.NodeState_NODE_STATE_FAILED
)

func TestApprovalExpiresOnTheClock(t *testing.T) {
	const ttl = time.Hour
	h := newHarness(t, func(c *rollout.Config) { c.ApprovalTTL = ttl })
	h.addNodes(2, "dc1")
	// An earlier rollout of the app runs (no gateway), so the approved one
	// waits for it.
	blocker := h.create(rollingPlan("100%", 0), approved)
	h.waitRollout(blocker, "RUNNING", stateIs(running))
	late := h.create(rollingPlan("100%", 0), pendingApproval)
	r, err := h.eng.Approve(h.ctx(), late, "bob", "")
	if err != nil || !r.GetApproveTime().AsTime().Equal(h.clk.Now()) {
		t.Fatalf("approve = %v, %v; want approved at the clock's %v", r, err, h.clk.Now())
	}
	h.waitRollout(late, "the queue message", func(r *outpostv1.Rollout) bool {
		return strings.Contains(r.GetMessage(), "waiting for rollout "+blocker)
	})

	// One tick before the TTL the approval holds...
	h.advance(ttl - tick)
	if r := h.rollout(late); r.GetState() != approved || r.GetApprover() != "bob" {
		t.Fatalf("%v after approval: %v by %q; want still APPROVED by bob", ttl-tick, r.GetState(), r.GetApprover())
	}
	// ...and at the TTL it expires.
	h.advance(tick)
	r = h.rollout(late)
	if r.GetState() != pendingApproval || r.GetApprover() != "" || r.GetApproveTime() != nil ||
		r.GetMessage() != "the approval by bob expired: the rollout did not start within 1h0m0s; approve it again" {
		t.Errorf("at the TTL: %v, approver %q at %v, message %q; want PENDING_APPROVAL, approval cleared",
			r.GetState(), r.GetApprover(), r.GetApproveTime(), r.GetMessage())
	}
}

func TestGatewayGrace(t *testing.T) {
	// A node whose gateway went away stays with that gateway for the
	// grace period; then it goes to another gateway of its datacenter,
	// which may take over the lock the first one held.
	const grace = 30 * time.Second
	tests := []struct {
		name string
		// back reconnects the first gateway within the grace, reporting
		// the assignment as still running.
		back bool
	}{
		{"reassigned after the grace", false},
		{"kept by a gateway back within the grace", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *rollout.Config) { c.OrphanGrace = grace })
			h.addNodes(1, "dc1")
			id := h.create(rollingPlan("100%", 0), approved)
			gwA := h.connect("gw-a", "dc1", 10)
			first := gwA.waitAssigned(1)[0]
			gwB := h.connect("gw-b", "dc1", 10)
			gwA.disconnect()
			h.settle() // the engine saw gw-a go
			if tt.back {
				gwA = h.connect("gw-a", "dc1", 10, first.GetAssignmentId())
			}

			h.advance(grace - tick)
			if n := h.node(id, nodeID(0)); n.GetState() != nodeRunning || n.GetAssignmentId() != first.GetAssignmentId() || n.GetGateway() != "gw-a" {
				t.Fatalf("a tick before the grace ends: node %v at %s (%s); want RUNNING at gw-a (%s)",
					n.GetState(), n.GetGateway(), n.GetAssignmentId(), first.GetAssignmentId())
			}
			h.advance(tick)
			if tt.back {
				if n := h.node(id, nodeID(0)); n.GetAssignmentId() != first.GetAssignmentId() || n.GetGateway() != "gw-a" {
					t.Fatalf("after the grace: node at %s (%s); want still at gw-a, which came back with it", n.GetGateway(), n.GetAssignmentId())
				}
				gwA.finish(first, nodeSucceeded, "")
			} else {
				again := gwB.waitAssigned(1)[0]
				if again.GetNode().GetId() != nodeID(0) || again.GetAssignmentId() == first.GetAssignmentId() ||
					again.GetTakeoverLockOf() != first.GetAssignmentId() {
					t.Fatalf("after the grace gw-b got %s (%s, takeover of %q); want %s anew, taking over %s",
						again.GetNode().GetId(), again.GetAssignmentId(), again.GetTakeoverLockOf(), nodeID(0), first.GetAssignmentId())
				}
				gwB.finish(again, nodeSucceeded, "")
			}
			h.waitRollout(id, "SUCCEEDED", stateIs(succeeded))
			if gwB.pending() != 0 && tt.back {
				t.Errorf("gw-b got %d assignments of a node its gateway came back with", gwB.pending())
			}
		})
	}
}

func TestBakeLastsItsDuration(t *testing.T) {
	// A stage with a bake is done once its bake time has passed and a
	// health check round found every node healthy; an unhealthy answer
	// rolls the stage's nodes back.
	const bake = 10 * time.Second
	interval := 2 * time.Second // plan.DeploySpecOf's default
	for _, healthy := range []bool{true, false} {
		name := map[bool]string{true: "healthy", false: "unhealthy"}[healthy]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.addNodes(2, "dc1")
			spec := rollingPlan("", 0)
			spec.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "all", Batch: "100%", Bake: bake.String()}}}
			id := h.create(spec, approved)
			gw := h.connect("gw", "dc1", 10)
			deploys := gw.waitAssigned(2)
			gw.finish(deploys[0], nodeSucceeded, "")
			gw.finish(deploys[1], nodeSucceeded, "")
			st := h.rollout(id).GetStages()[0]
			if st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING || !st.GetBakeEndTime().AsTime().Equal(h.clk.Now().Add(bake)) {
				t.Fatalf("stage %v, bake ends %v; want BAKING until %v", st.GetState(), st.GetBakeEndTime().AsTime(), h.clk.Now().Add(bake))
			}

			// A round of checks one interval after the nodes were deployed.
			h.advance(interval)
			checks := gw.waitAssigned(2)
			for _, c := range checks {
				if c.GetKind() != outpostv1.AssignmentKind_ASSIGNMENT_KIND_HEALTH_CHECK {
					t.Fatalf("bake sent %v, want HEALTH_CHECK", c.GetKind())
				}
			}
			if !healthy {
				gw.answer(checks[0], nodeSucceeded, "")
				gw.finish(checks[1], nodeFailed, "status 503")
				r := h.rollout(id)
				want := "health check failed during the bake of stage all (" + checks[1].GetNode().GetId() + ": status 503); rolling back the stage's 2 node(s)"
				if r.GetStages()[0].GetState() != outpostv1.StageState_STAGE_STATE_FAILED || r.GetMessage() != want {
					t.Fatalf("after an unhealthy check: stage %v, message %q", r.GetStages()[0].GetState(), r.GetMessage())
				}
				for _, a := range gw.waitAssigned(2) {
					if a.GetKind() != outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK || a.GetRollbackTo() != "previous" {
						t.Fatalf("after the failed bake: %v to %q, want ROLLBACK to the previous release", a.GetKind(), a.GetRollbackTo())
					}
					gw.finish(a, nodeSucceeded, "")
				}
				r = h.waitRollout(id, "FAILED_ROLLED_BACK", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK))
				if r.GetNodeCounts().GetRolledBack() != 2 {
					t.Errorf("counts %v, want 2 rolled back", r.GetNodeCounts())
				}
				return
			}
			for _, c := range checks {
				gw.answer(c, nodeSucceeded, "")
			}
			h.applied(gw)

			// Healthy, but the bake has time left: still baking a tick
			// before its end, done at it (a round then starts and must
			// come back healthy).
			end := h.rollout(id).GetStages()[0].GetBakeEndTime().AsTime()
			h.advance(end.Sub(h.clk.Now()) - tick)
			if st := h.rollout(id).GetStages()[0]; st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING {
				t.Fatalf("a tick before the bake's end: stage %v, want BAKING", st.GetState())
			}
			// The rounds since came due at that tick: answer this one.
			for _, c := range gw.waitAssigned(2) {
				gw.answer(c, nodeSucceeded, "")
			}
			h.applied(gw)
			if st := h.rollout(id).GetStages()[0]; st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING {
				t.Fatalf("a healthy round a tick before the bake's end: stage %v, want BAKING", st.GetState())
			}
			h.advance(tick)
			r := h.rollout(id)
			if st := r.GetStages()[0]; r.GetState() != succeeded || st.GetState() != outpostv1.StageState_STAGE_STATE_SUCCEEDED || !st.GetEndTime().AsTime().Equal(end) {
				t.Errorf("at the bake's end: rollout %v, stage %v ended %v; want SUCCEEDED at %v", r.GetState(), st.GetState(), st.GetEndTime().AsTime(), end)
			}
		})
	}
}

func TestRefusedAssignmentBacksOff(t *testing.T) {
	// A gateway that refused an assignment gets no new one for
	// RefuseBackoff; a node refused five times in a row fails.
	const backoff = time.Second
	h := newHarness(t, func(c *rollout.Config) { c.RefuseBackoff = backoff })
	h.addNodes(1, "dc1")
	id := h.create(rollingPlan("100%", 0), approved)
	gw := h.connect("gw", "dc1", 10)
	for i := 1; i <= 5; i++ {
		a := gw.waitAssigned(1)[0]
		gw.refuse(a, "disk full")
		h.applied(gw)
		if i == 5 {
			break
		}
		h.advance(backoff - tick)
		if n := h.node(id, nodeID(0)); n.GetState() != nodePending || n.GetAssignmentId() != "" {
			t.Fatalf("refusal %d, a tick before the backoff ends: node %v (%s); want PENDING, unassigned", i, n.GetState(), n.GetAssignmentId())
		}
		h.advance(tick)
		if n := h.node(id, nodeID(0)); n.GetState() != nodeRunning {
			t.Fatalf("refusal %d, at the backoff's end: node %v; want RUNNING again", i, n.GetState())
		}
	}
	n := h.node(id, nodeID(0))
	if n.GetState() != nodeFailed || n.GetError() != "refused by gateway gw: disk full" {
		t.Errorf("after five refusals: node %v %q; want FAILED, refused", n.GetState(), n.GetError())
	}
}

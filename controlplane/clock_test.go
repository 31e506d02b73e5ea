package controlplane

import (
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/clock/clocktest"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// engineTick is the rollout engine's tick interval (rollout.tickInterval).
const engineTick = 100 * time.Millisecond

// withClock runs the control plane on c.
func withClock(c *clocktest.Fake) cpOption { return func(cfg *Config) { cfg.Clock = c } }

// newFakeClock returns a fake clock at a fixed time far from the real one,
// so a time stamp taken from the system clock by mistake shows.
func newFakeClock() *clocktest.Fake {
	return clocktest.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC))
}

// advance moves c by d, then by one more engine tick, and returns once
// the engine received both ticks: the loop is serial, so the work of the
// first tick (and its write) is done.
func advance(t *testing.T, c *clocktest.Fake, d time.Duration) {
	t.Helper()
	for _, step := range []time.Duration{d, engineTick} {
		c.Advance(step)
		deadline := time.Now().Add(waitLimit)
		for c.Unreceived() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the engine did not take its tick within %v", waitLimit)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestApprovalExpiresOnTheClock shows Config.Clock reaching the engine
// through the API server: records are stamped with it and its ticks
// expire approvals. The rule itself is tested in controlplane/rollout.
func TestApprovalExpiresOnTheClock(t *testing.T) {
	const ttl = time.Hour
	clk := newFakeClock()
	s := startCP(t, t.TempDir(), withClock(clk), func(c *Config) { c.ApprovalTTL = ttl })
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 2, nil)
	digest := upload(t, admin, "a.tar.gz", []byte("a"))
	alice := userClient(t, s, "alice", pki.RoleDeployer)
	bob := userClient(t, s, "bob", pki.RoleApprover)

	// An earlier rollout of the app runs (no gateway), so the approved one
	// waits for it.
	blocker := createRollout(t, admin, rollingPlan("100%", 0), digest)
	waitRollout(t, admin, blocker.GetId(), "RUNNING", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING))
	spec := rollingPlan("100%", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	late := createRollout(t, alice, spec, digest)
	if !late.GetCreateTime().AsTime().Equal(clk.Now()) {
		t.Errorf("create time %v, want the injected clock's %v", late.GetCreateTime().AsTime(), clk.Now())
	}
	a, err := bob.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: late.GetId()})
	if err != nil || !a.GetRollout().GetApproveTime().AsTime().Equal(clk.Now()) {
		t.Fatalf("approve = %v, %v; want approved at the injected clock's %v", a.GetRollout(), err, clk.Now())
	}
	waitRollout(t, admin, late.GetId(), "the queue message", func(r *outpostv1.Rollout) bool {
		return strings.Contains(r.GetMessage(), "waiting for rollout "+blocker.GetId())
	})

	// Just before the TTL the approval holds...
	advance(t, clk, ttl-3*engineTick)
	r, err := admin.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: late.GetId()})
	if err != nil || r.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_APPROVED || r.GetRollout().GetApprover() != "bob" {
		t.Fatalf("%v before the TTL: %v, %v; want still APPROVED by bob", ttl-2*engineTick, r.GetRollout(), err)
	}
	// ...and at the TTL it expires.
	advance(t, clk, 2*engineTick)
	expired := waitRollout(t, admin, late.GetId(), "the approval to expire", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL))
	if expired.GetApprover() != "" || !strings.Contains(expired.GetMessage(), "the approval by bob expired: the rollout did not start within 1h0m0s") {
		t.Errorf("expired: approver %q message %q", expired.GetApprover(), expired.GetMessage())
	}
}

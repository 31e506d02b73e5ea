package e2e

import (
	"strings"
	"testing"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestNodeWaitsForItsDatacenterGateway rolls out to two datacenters while
// only one has a gateway: the other datacenter's nodes wait, say so, and
// are not touched, until a gateway for it connects; then the rollout
// finishes.
func TestNodeWaitsForItsDatacenterGateway(t *testing.T) {
	const hosts = 4
	dcOf := func(i int) string {
		if i < 2 {
			return dcA
		}
		return "dc-late"
	}
	s := newSystem(t, hosts, dcOf)
	s.startGateway("gw-a", dcA)
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "100%", 0), digest)

	want := "waiting for a gateway in datacenter dc-late"
	waiting := s.wait(r.GetId(), "dc-a done and dc-late waiting", func(r *outpostv1.Rollout) bool {
		return r.GetNodeCounts().GetSucceeded() == 2 && strings.Contains(r.GetMessage(), want)
	})
	if waiting.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Errorf("while waiting the rollout is %v, want RUNNING", waiting.GetState())
	}
	if c := waiting.GetNodeCounts(); c.GetPending() != 2 || c.GetRunning() != 0 {
		t.Errorf("while waiting: counts %v, want 2 pending and none running", c)
	}
	recs := s.rolloutNodes(r.GetId())
	for i := 2; i < hosts; i++ {
		id := e2etest.NodeID(i)
		rec := recs[id]
		if rec.GetState() != outpostv1.NodeState_NODE_STATE_PENDING || !strings.Contains(rec.GetError(), want) || rec.GetGateway() != "" {
			t.Errorf("%s: %v on gateway %q, status %q; want PENDING, unassigned, %q", id, rec.GetState(), rec.GetGateway(), rec.GetError(), want)
		}
		if h := s.host(i); h.current != "" || len(h.history) != 0 || h.locked {
			t.Errorf("%s was touched before its gateway connected: current %q, %d history lines, locked %v", id, h.current, len(h.history), h.locked)
		}
	}

	s.startGateway("gw-late", "dc-late")
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || done.GetNodeCounts().GetSucceeded() != hosts {
		t.Fatalf("rollout ended %v (%v): %q, want all %d SUCCEEDED", done.GetState(), done.GetNodeCounts(), done.GetMessage(), hosts)
	}
	if strings.Contains(done.GetMessage(), "waiting") {
		t.Errorf("message %q still says it waits", done.GetMessage())
	}
	recs = s.rolloutNodes(r.GetId())
	for i := range hosts {
		s.checkOn(i, r.GetReleaseId(), 1)
		rec := recs[e2etest.NodeID(i)]
		wantGW := map[bool]string{true: "gw-a", false: "gw-late"}[i < 2]
		if rec.GetGateway() != wantGW || rec.GetError() != "" {
			t.Errorf("%s: gateway %q, error %q; want %q and no error", rec.GetNodeId(), rec.GetGateway(), rec.GetError(), wantGW)
		}
	}
}

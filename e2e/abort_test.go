package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestHealthFailureAbortsAtBudget deploys a release that never becomes
// healthy over v1: the first batch of 5 fails its health check and is
// rolled back, the third failure of 20 nodes crosses max_fail_percent 10,
// and the other 15 nodes are never touched.
func TestHealthFailureAbortsAtBudget(t *testing.T) {
	const hosts, batch = 20, 5
	s := newSystem(t, hosts, alternateDC)
	s.twoGateways()
	v1 := s.deploy("1.0.0", "10")

	_, digest := s.release("2.0.0", false)
	r := s.create(e2etest.RollingPlan("release-2.0.0-broken.tar.gz", "5", 10), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED {
		t.Fatalf("rollout %s ended %v: %q, want ABORTED", r.GetId(), done.GetState(), done.GetMessage())
	}
	if diff := cmp.Diff(countsOf(hosts, 0, batch, hosts-batch), done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("node counts (-want +got):\n%s", diff)
	}
	// The budget is checked after each result: the third failure aborts.
	if want := "3 of 20 nodes failed (15% > 10%)"; !strings.Contains(done.GetMessage(), want) {
		t.Errorf("message = %q, want it to say %q", done.GetMessage(), want)
	}
	v2 := r.GetReleaseId()

	recs := s.rolloutNodes(r.GetId())
	for i, n := range s.nodes {
		rec := recs[n.GetId()]
		h := s.checkOn(i, v1, 1)
		name := s.fleet.Hosts()[i].Name
		if i < batch {
			// The first batch: switched to v2, unhealthy, back on v1.
			if rec.GetState() != outpostv1.NodeState_NODE_STATE_ROLLED_BACK || rec.GetStep() != outpostv1.Step_STEP_HEALTH || rec.GetError() == "" {
				t.Errorf("%s: %v at %v (error %q), want ROLLED_BACK at STEP_HEALTH with an error", n.GetId(), rec.GetState(), rec.GetStep(), rec.GetError())
			}
			if rec.GetPreviousRelease() != v1 {
				t.Errorf("%s: previous release %q, want %q", n.GetId(), rec.GetPreviousRelease(), v1)
			}
			var actions []string
			for _, e := range h.history {
				actions = append(actions, e.Action+" "+e.Release+" "+resultWord(e.Result))
			}
			want := []string{"activate " + v1 + " succeeded", "activate " + v2 + " failed", "rollback " + v1 + " succeeded"}
			if diff := cmp.Diff(want, actions); diff != "" {
				t.Errorf("%s: history (-want +got):\n%s", name, diff)
			}
			continue
		}
		// The rest: skipped, and the host shows no trace of v2.
		if rec.GetState() != outpostv1.NodeState_NODE_STATE_SKIPPED || rec.GetGateway() != "" || rec.GetStartTime() != nil {
			t.Errorf("%s: %v on gateway %q started %v, want SKIPPED and never assigned", n.GetId(), rec.GetState(), rec.GetGateway(), rec.GetStartTime())
		}
		if len(h.history) != 1 {
			t.Errorf("%s: %d history lines, want only v1's:\n%s", name, len(h.history), historyText(h.history))
		}
		entries, err := os.ReadDir(filepath.Join(s.fleet.Hosts()[i].ServiceDir(), "releases"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != v1 {
				t.Errorf("%s: releases/%s exists; a skipped node must be untouched", name, e.Name())
			}
		}
	}
}

// resultWord is "succeeded" or "failed" without the reason.
func resultWord(r string) string {
	if strings.HasPrefix(r, "failed") {
		return "failed"
	}
	return r
}

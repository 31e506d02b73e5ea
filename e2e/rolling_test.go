package e2e

import (
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestRollingDeployTwoDatacenters deploys v1 then v2 to 20 nodes in two
// datacenters, each with its own gateway, in batches of 5, and checks
// every host's files and health, not only what the API says.
func TestRollingDeployTwoDatacenters(t *testing.T) {
	const hosts, batch = 20, 5
	s := newSystem(t, hosts, alternateDC)
	s.twoGateways()

	v1 := s.deploy("1.0.0", "10")

	_, digest := s.release("2.0.0", true)
	r := s.create(e2etest.RollingPlan("release-2.0.0.tar.gz", "5", 10), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout %s ended %v: %q", r.GetId(), done.GetState(), done.GetMessage())
	}
	v2 := r.GetReleaseId()
	if diff := cmp.Diff(countsOf(hosts, hosts, 0, 0), done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("node counts (-want +got):\n%s", diff)
	}
	if done.GetMessage() != "" {
		t.Errorf("message = %q, want none", done.GetMessage())
	}

	// The plan's batches: 4 of 5 in node id order.
	var batches [][]string
	for _, st := range done.GetStages() {
		if st.GetState() != outpostv1.StageState_STAGE_STATE_SUCCEEDED {
			t.Errorf("stage %s is %v, want SUCCEEDED", st.GetName(), st.GetState())
		}
		for _, b := range st.GetBatches() {
			batches = append(batches, b.GetNodeIds())
		}
	}
	var wantBatches [][]string
	for i := 0; i < hosts; i += batch {
		var ids []string
		for j := i; j < i+batch; j++ {
			ids = append(ids, e2etest.NodeID(j))
		}
		wantBatches = append(wantBatches, ids)
	}
	if diff := cmp.Diff(wantBatches, batches); diff != "" {
		t.Fatalf("batches (-want +got):\n%s", diff)
	}

	recs := s.rolloutNodes(r.GetId())
	ends := map[string]time.Time{} // when each node's activation was recorded on the node
	for i, n := range s.nodes {
		rec := recs[n.GetId()]
		if rec.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || rec.GetRelease() != v2 || rec.GetPreviousRelease() != v1 {
			t.Errorf("%s: %v release %q previous %q, want SUCCEEDED %q from %q (error %q)",
				n.GetId(), rec.GetState(), rec.GetRelease(), rec.GetPreviousRelease(), v2, v1, rec.GetError())
		}
		wantGW := map[string]string{dcA: "gw-a", dcB: "gw-b"}[n.GetDatacenter()]
		if rec.GetGateway() != wantGW || rec.GetDatacenter() != n.GetDatacenter() {
			t.Errorf("%s in %s ran on gateway %q (record says %s), want %q", n.GetId(), n.GetDatacenter(), rec.GetGateway(), rec.GetDatacenter(), wantGW)
		}
		h := s.checkOn(i, v2, 1)
		if len(h.history) != 2 {
			t.Errorf("%s: %d history lines, want 2 (v1, v2):\n%s", n.GetId(), len(h.history), historyText(h.history))
			continue
		}
		if e := h.history[0]; e.Action != "activate" || e.Release != v1 || e.Previous != "" || e.Rollout == r.GetId() {
			t.Errorf("%s: first history line %+v, want the activation of %s from nothing", n.GetId(), e, v1)
		}
		e := h.history[1]
		if e.Action != "activate" || e.Release != v2 || e.Previous != v1 || e.Result != "succeeded" || e.Rollout != r.GetId() {
			t.Errorf("%s: second history line %+v, want the activation of %s from %s by %s", n.GetId(), e, v2, v1, r.GetId())
		}
		ends[n.GetId()] = e.Time
	}

	// Batches in order and never overlapping: every node of batch k+1
	// started (per the control plane) after every node of batch k had
	// recorded its activation on its host. Both clocks are this process's.
	for k := 1; k < len(batches); k++ {
		var lastEnd time.Time
		for _, id := range batches[k-1] {
			if ends[id].After(lastEnd) {
				lastEnd = ends[id]
			}
		}
		for _, id := range batches[k] {
			if st := recs[id].GetStartTime().AsTime(); !st.After(lastEnd) {
				t.Errorf("%s (batch %d) started at %v, before batch %d ended at %v", id, k, st.Format(time.StampMicro), k-1, lastEnd.Format(time.StampMicro))
			}
		}
	}
	if got := maxOverlap(recs, ends); got > batch {
		t.Errorf("%d nodes deployed at once, want at most the batch size %d", got, batch)
	}
}

// maxOverlap is the most node deployments, from their start to the
// activation recorded on the host, that ran at one instant.
func maxOverlap(recs map[string]*outpostv1.RolloutNode, ends map[string]time.Time) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for id, end := range ends {
		edges = append(edges, edge{recs[id].GetStartTime().AsTime(), 1}, edge{end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	cur, most := 0, 0
	for _, e := range edges {
		cur += e.delta
		most = max(most, cur)
	}
	return most
}

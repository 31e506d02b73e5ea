package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// nodeSteps are the steps a node's deployment reports, in order; a hook
// the plan leaves empty is still reported (as skipped), so the trail has
// the same shape for every plan.
var nodeSteps = []string{"connect", "lock", "precheck", "upload", "verify", "unpack", "before_install", "stop", "switch", "after_install", "start", "health", "prune", "history", "unlock"}

// TestAuditTrailOfARollout: the audit log holds exactly who created the
// rollout, each of its state changes and each node's result with every
// step it ran, each once, and for every node in step order. The
// node entries name the gateway that deployed the node.
func TestAuditTrailOfARollout(t *testing.T) {
	s := newSystem(t, 2, alternateDC)
	s.twoGateways()
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "2", 10), digest)
	if done := s.waitDone(r.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout ended %v: %s", done.GetState(), done.GetMessage())
	}

	var want []string
	want = append(want, outpostv1.ControlPlaneService_CreateRollout_FullMethodName+" rollouts/"+r.GetId()+" by admin: OK")
	want = append(want,
		"rollout.state rollouts/"+r.GetId()+": OK APPROVED -> RUNNING",
		"rollout.state rollouts/"+r.GetId()+": OK RUNNING -> SUCCEEDED")
	for i, gw := range []string{"gw-a", "gw-b"} { // alternateDC
		id := e2etest.NodeID(i)
		// The steps are folded into the node's result entry.
		want = append(want, fmt.Sprintf("node.result nodes/%s by gateway %s: OK SUCCEEDED %v", id, gw, nodeSteps))
	}

	ac := outpostv1.NewAuditServiceClient(s.client.Conn)
	var got []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: r.GetId(), PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range resp.GetEntries() {
			line := e.GetAction() + " " + e.GetResource()
			switch e.GetActorKind() {
			case outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER:
				line += " by " + e.GetActor()
			case outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY:
				line += " by gateway " + e.GetActor()
			}
			line += ": " + e.GetResult()
			if strings.HasPrefix(e.GetAction(), "node.") || e.GetAction() == "rollout.state" {
				line += " " + e.GetMessage()
			}
			if e.GetAction() == "node.result" {
				// "connect ok 12ms, lock ok 3ms, ...": the step names.
				var steps []string
				for _, s := range strings.Split(e.GetDetails()["steps"], ", ") {
					if f := strings.Fields(s); len(f) > 0 {
						steps = append(steps, f[0])
					}
				}
				line += fmt.Sprintf(" %v", steps)
			}
			got = append(got, line)
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nodes deploy in parallel, so entries of different nodes interleave;
	// each node's own entries keep their order.
	for i := range 2 {
		id := "nodes/" + e2etest.NodeID(i) + " "
		if g, w := only(got, id), only(want, id); !slices.Equal(g, w) {
			t.Errorf("audit entries of %s:\n got %q\nwant %q", id, g, w)
		}
	}
	sortedGot, sortedWant := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(sortedGot, sortedWant) {
		t.Errorf("audit trail of %s:\n got %q\nwant %q", r.GetId(), sortedGot, sortedWant)
	}
}

// only keeps the lines that contain s.
func only(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

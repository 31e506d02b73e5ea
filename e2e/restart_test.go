package e2e

import (
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// execDelay slows every command on the hosts so that a rollout of 20
// nodes lasts a few seconds and can be interrupted in its middle.
const execDelay = 150 * time.Millisecond

// midRollout waits until the rollout has finished its first batch and is
// deploying nodes of a later one.
func (s *system) midRollout(id string) *outpostv1.Rollout {
	s.t.Helper()
	return s.wait(id, "the rollout's second batch to run", func(r *outpostv1.Rollout) bool {
		c := r.GetNodeCounts()
		return c.GetSucceeded() >= 4 && c.GetRunning() > 0
	})
}

// checkRolledOutOnce checks that the rollout succeeded on every node and
// that every host activated its release exactly once.
func (s *system) checkRolledOutOnce(r *outpostv1.Rollout) {
	s.t.Helper()
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		s.t.Errorf("rollout %s ended %v: %q, want SUCCEEDED", r.GetId(), done.GetState(), done.GetMessage())
	}
	n := int32(len(s.nodes))
	if c := done.GetNodeCounts(); c.GetTotal() != n || c.GetSucceeded() != n {
		s.t.Errorf("node counts %v, want all %d succeeded", c, n)
	}
	recs := s.rolloutNodes(r.GetId())
	for i, node := range s.nodes {
		if rec := recs[node.GetId()]; rec.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			s.t.Errorf("%s: %v at %v: %q", node.GetId(), rec.GetState(), rec.GetStep(), rec.GetError())
		}
		h := s.checkOn(i, r.GetReleaseId(), 1)
		if len(h.history) != 1 {
			s.t.Errorf("%s: %d history lines, want exactly one activation:\n%s", node.GetId(), len(h.history), historyText(h.history))
		}
	}
}

// TestGatewayRestartMidRollout stops one datacenter's gateway in the
// middle of a rollout (as SIGTERM does) and starts it again: the rollout
// finishes, and no node is deployed twice.
func TestGatewayRestartMidRollout(t *testing.T) {
	s := newSystem(t, 20, alternateDC)
	s.twoGateways()
	s.setExecDelay(execDelay)
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "4", 10), digest)

	s.midRollout(r.GetId())
	s.stopGateway("gw-a")
	time.Sleep(200 * time.Millisecond)
	s.startGateway("gw-a", dcA)

	s.checkRolledOutOnce(r)
}

// TestControlPlaneRestartMidRollout shuts the control plane down in the
// middle of a rollout, lets the gateways finish what they were doing
// while it is away, and starts it again on the same data directory and
// address: the rollout resumes and no finished node is deployed again.
func TestControlPlaneRestartMidRollout(t *testing.T) {
	s := newSystem(t, 20, alternateDC)
	s.twoGateways()
	s.setExecDelay(execDelay)
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "4", 10), digest)

	s.midRollout(r.GetId())
	s.stopCP()
	// Long enough for the running nodes to finish while it is away.
	time.Sleep(2 * time.Second)
	s.startCP()

	s.checkRolledOutOnce(r)
}

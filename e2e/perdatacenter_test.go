package e2e

import (
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane"
)

// TestMaxPerDatacenter runs a rollout of one batch of 12 nodes in one
// datacenter served by two gateways (10 at once each) under a control
// plane bounding the datacenter to 3 deployments at once: the hosts never
// see more than 3 SSH connections at a time, and do see 3.
func TestMaxPerDatacenter(t *testing.T) {
	const limit = 3
	s := newSystem(t, 12, func(int) string { return "dc-a" },
		withCPConfig(func(c *controlplane.Config) { c.MaxPerDatacenter = limit }))
	s.startGateway("gw-a1", "dc-a")
	s.startGateway("gw-a2", "dc-a")
	// Each deployment holds its connection for a few hundred ms, so
	// deployments of a batch overlap unless something bounds them.
	s.setExecDelay(150 * time.Millisecond)
	s.fleet.ResetPeakConnections()
	s.deploy("v1", "100%")
	if got := s.fleet.PeakConnections(); got != limit {
		t.Errorf("the hosts had up to %d SSH connections open at once, want %d (the datacenter's bound)", got, limit)
	}
}

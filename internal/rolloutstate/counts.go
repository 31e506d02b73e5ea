package rolloutstate

import (
	"fmt"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Add counts one node in state s into c. A node in a state without a
// field of its own (UNSPECIFIED, or one newer than this code) counts
// only in the total.
func Add(c *outpostv1.NodeCounts, s outpostv1.NodeState) {
	c.Total++
	switch s {
	case outpostv1.NodeState_NODE_STATE_PENDING:
		c.Pending++
	case outpostv1.NodeState_NODE_STATE_RUNNING:
		c.Running++
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED:
		c.Succeeded++
	case outpostv1.NodeState_NODE_STATE_FAILED:
		c.Failed++
	case outpostv1.NodeState_NODE_STATE_ROLLED_BACK:
		c.RolledBack++
	case outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		c.RollbackFailed++
	case outpostv1.NodeState_NODE_STATE_SKIPPED:
		c.Skipped++
	}
}

// Counts sums the states of nodes: what the engine stores in
// Rollout.node_counts and Stage.node_counts, and what a dry run shows.
func Counts(nodes []*outpostv1.RolloutNode) *outpostv1.NodeCounts {
	c := &outpostv1.NodeCounts{}
	for _, n := range nodes {
		Add(c, n.GetState())
	}
	return c
}

// Failed is how many of the counted nodes failed (see NodeFailed):
// failed, rolled back, or whose rollback failed.
func Failed(c *outpostv1.NodeCounts) int32 {
	return c.GetFailed() + c.GetRolledBack() + c.GetRollbackFailed()
}

// CountsText summarizes node counts for people: "20 nodes: 15 succeeded,
// 5 pending". Zero counts are left out. The CLI and the notifications
// show it.
func CountsText(c *outpostv1.NodeCounts) string {
	var parts []string
	add := func(n int32, word string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, word))
		}
	}
	add(c.GetSucceeded(), "succeeded")
	add(c.GetRunning(), "running")
	add(c.GetPending(), "pending")
	add(c.GetFailed(), "failed")
	add(c.GetRolledBack(), "rolled back")
	add(c.GetRollbackFailed(), "rollback failed")
	add(c.GetSkipped(), "skipped")
	s := fmt.Sprintf("%d nodes", c.GetTotal())
	if c.GetTotal() == 1 {
		s = "1 node"
	}
	if len(parts) == 0 {
		return s
	}
	return s + ": " + strings.Join(parts, ", ")
}

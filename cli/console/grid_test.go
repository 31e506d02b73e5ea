package console

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeIn(id string, st outpostv1.NodeState) *outpostv1.RolloutNode {
	return &outpostv1.RolloutNode{RolloutId: "r1", NodeId: id, State: st}
}

// TestGridEvent: the grid lists every node once, in id order, with its
// latest state as a NodeState number, whatever order pages came in.
func TestGridEvent(t *testing.T) {
	s, _ := New(Config{}, "127.0.0.1:1")
	live, done := s.watching("r1")
	defer done()
	live.put([]*outpostv1.RolloutNode{nodeIn("n3", outpostv1.NodeState_NODE_STATE_PENDING), nodeIn("n1", outpostv1.NodeState_NODE_STATE_RUNNING)})
	live.put([]*outpostv1.RolloutNode{nodeIn("n2", outpostv1.NodeState_NODE_STATE_FAILED), nodeIn("n1", outpostv1.NodeState_NODE_STATE_SUCCEEDED)})
	var got gridEvent
	if err := json.Unmarshal(encodeGrid(live.grid()), &got); err != nil {
		t.Fatal(err)
	}
	want := gridEvent{IDs: []string{"n1", "n2", "n3"}, States: []int32{3, 4, 1}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("grid event (-want +got):\n%s", d)
	}
	empty, doneEmpty := s.watching("r2")
	defer doneEmpty()
	if b := string(encodeGrid(empty.grid())); b != `{"ids":[],"states":[]}` {
		t.Errorf("grid of no nodes = %s, want empty lists (not null)", b)
	}
}

// TestLiveNode: a node's record is served from a watch of its rollout
// only while that watch is open.
func TestLiveNode(t *testing.T) {
	s, _ := New(Config{}, "127.0.0.1:1")
	live, done := s.watching("r1")
	live.put([]*outpostv1.RolloutNode{nodeIn("n1", outpostv1.NodeState_NODE_STATE_RUNNING)})
	if n := s.liveNode("r1", "n1"); n.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING {
		t.Errorf("liveNode(r1, n1) = %v, want the RUNNING record", n)
	}
	if n := s.liveNode("r2", "n1"); n != nil {
		t.Errorf("liveNode(r2, n1) = %v, want nil: another rollout", n)
	}
	done()
	if n := s.liveNode("r1", "n1"); n != nil {
		t.Errorf("liveNode after the watch ended = %v, want nil", n)
	}
}

package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
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

// TestNodeRecord: the node panel's request gets the record of a node of a
// rollout the page watches without calling the control plane (there is
// none: a call would panic on the nil client), and a node id too long to
// be one is refused.
func TestNodeRecord(t *testing.T) {
	s, base := serve(t)
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	if resp := do(t, c, "GET", base+s.LoginPath(), nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	live, done := s.watching("r-1")
	defer done()
	live.put([]*outpostv1.RolloutNode{{RolloutId: "r-1", NodeId: "web 1", Datacenter: "dc-1", State: outpostv1.NodeState_NODE_STATE_FAILED, Error: "hook says no"}})
	resp, err := c.Get(base + "/api/rollouts/r-1/nodes/web%201")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"error":"hook says no"`) || !strings.Contains(string(body), `"state":"NODE_STATE_FAILED"`) {
		t.Errorf("record of a watched node: %s %s, want 200 with its record", resp.Status, body)
	}
	if resp := do(t, c, "GET", base+"/api/rollouts/r-1/nodes/"+strings.Repeat("n", maxNodeID+1), nil, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a %d-byte node id: %s, want 400", maxNodeID+1, resp.Status)
	}
}

package console

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The rollout page draws a grid of the rollout's nodes coloured by state.
// A rollout of 10,000 nodes must draw in well under a second, so the page
// does not get the snapshot's node records (about 200 bytes of JSON each,
// slow to encode here and to parse there): it gets one "grid" event, the
// node ids in order and a state per node, and asks for a node's record
// when a person opens it. Changes after the snapshot come as the records
// of the changed nodes only ("nodes" events), few at a time.

// maxNodeID bounds the node id a detail request may name.
const maxNodeID = 256

// gridEvent is the snapshot as the page draws it: ids[i] is in state
// states[i] (a NodeState number).
type gridEvent struct {
	IDs    []string `json:"ids"`
	States []int32  `json:"states"`
}

// liveNodes is the latest record of every node of one watched rollout, as
// its watch stream delivered them: the node panel reads from it while the
// page watches, without a call to the control plane.
type liveNodes struct {
	rollout string

	mu    sync.Mutex
	nodes map[string]*outpostv1.RolloutNode // guarded by mu
}

func (l *liveNodes) put(ns []*outpostv1.RolloutNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range ns {
		l.nodes[n.GetNodeId()] = n
	}
}

func (l *liveNodes) get(id string) *outpostv1.RolloutNode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes[id]
}

// grid is the snapshot's grid event: the nodes in id order.
func (l *liveNodes) grid() gridEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := gridEvent{IDs: make([]string, 0, len(l.nodes)), States: make([]int32, 0, len(l.nodes))}
	for id := range l.nodes {
		g.IDs = append(g.IDs, id)
	}
	sort.Strings(g.IDs)
	for _, id := range g.IDs {
		g.States = append(g.States, int32(l.nodes[id].GetState()))
	}
	return g
}

// watching registers the node records of a watch of rollout until the
// returned function is called.
func (s *Server) watching(rollout string) (*liveNodes, func()) {
	l := &liveNodes{rollout: rollout, nodes: map[string]*outpostv1.RolloutNode{}}
	s.mu.Lock()
	if s.live == nil {
		s.live = map[*liveNodes]bool{}
	}
	s.live[l] = true
	s.mu.Unlock()
	return l, func() {
		s.mu.Lock()
		delete(s.live, l)
		s.mu.Unlock()
	}
}

// liveNode is node's record from a watch of rollout open now, or nil.
func (s *Server) liveNode(rollout, node string) *outpostv1.RolloutNode {
	s.mu.Lock()
	var watches []*liveNodes
	for l := range s.live {
		if l.rollout == rollout {
			watches = append(watches, l)
		}
	}
	s.mu.Unlock()
	for _, l := range watches {
		if n := l.get(node); n != nil {
			return n
		}
	}
	return nil
}

// rolloutNode answers one node's record in a rollout: from a watch of the
// rollout open in this console, else from the control plane.
func (s *Server) rolloutNode(w http.ResponseWriter, r *http.Request) {
	rollout, node := r.PathValue("id"), r.PathValue("node")
	if node == "" || len(node) > maxNodeID {
		writeError(w, http.StatusBadRequest, "node id: want 1 to 256 bytes")
		return
	}
	if n := s.liveNode(rollout, node); n != nil {
		writeJSON(w, raw(n))
		return
	}
	// Nodes come sorted by id: stop at the first page past the node.
	token := ""
	for range maxPages {
		ctx, cancel := unary(r)
		resp, err := s.cfg.CP.ListRolloutNodes(ctx, &outpostv1.ListRolloutNodesRequest{RolloutId: rollout, PageToken: token, PageSize: 5000})
		cancel()
		if err != nil {
			writeRPCError(w, "list rollout nodes", err)
			return
		}
		ns := resp.GetNodes()
		i := sort.Search(len(ns), func(i int) bool { return ns[i].GetNodeId() >= node })
		if i < len(ns) && ns[i].GetNodeId() == node {
			writeJSON(w, raw(ns[i]))
			return
		}
		if token = resp.GetNextPageToken(); token == "" || i < len(ns) {
			break
		}
	}
	writeError(w, http.StatusNotFound, "rollout "+rollout+" has no node "+node)
}

// encodeGrid is the grid event's data.
func encodeGrid(g gridEvent) json.RawMessage {
	b, err := json.Marshal(g)
	if err != nil {
		return json.RawMessage(`{"ids":[],"states":[]}`)
	}
	return b
}

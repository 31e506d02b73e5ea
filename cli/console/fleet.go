package console

import (
	"encoding/json"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// maxFleetRollouts is how many of the newest rollouts the fleet page
	// reads to find each node's desired release.
	maxFleetRollouts = 20
	// maxDiffLines bounds each side of a plan diff.
	maxDiffLines = 2000
)

// fleetNode is a node of the fleet page.
type fleetNode struct {
	ID         string            `json:"id"`
	Address    string            `json:"address"`
	Datacenter string            `json:"datacenter"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Desired is the release Outpost last activated on the node: that of
	// the newest rollout that succeeded on it, and its rollout.
	Desired        string `json:"desired"`
	DesiredRollout string `json:"desiredRollout"`
	// Observation holds what the node was last seen running, and its
	// drift; filled by observe.
	Observation map[string]any `json:"observation,omitempty"`
}

// observe fills what the control plane observed on a node. The node
// resource does not carry observations yet; when it does, this is the one
// place that maps them, and the fleet page's drift columns show them.
func observe(*outpostv1.Node) map[string]any { return nil }

func (s *Server) fleet(w http.ResponseWriter, r *http.Request) {
	var nodes []fleetNode
	token := ""
	for range maxPages {
		ctx, cancel := unary(r)
		resp, err := s.cfg.CP.ListNodes(ctx, &outpostv1.ListNodesRequest{PageToken: token, PageSize: 1000, Datacenter: r.URL.Query().Get("datacenter")})
		cancel()
		if err != nil {
			writeRPCError(w, "list nodes", err)
			return
		}
		for _, n := range resp.GetNodes() {
			nodes = append(nodes, fleetNode{ID: n.GetId(), Address: n.GetAddress(), Datacenter: n.GetDatacenter(), Labels: n.GetLabels(), Observation: observe(n)})
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	desired, err := s.desired(r)
	if err != nil {
		writeRPCError(w, "list rollouts", err)
		return
	}
	for i := range nodes {
		if d, ok := desired[nodes[i].ID]; ok {
			nodes[i].Desired, nodes[i].DesiredRollout = d[0], d[1]
		}
	}
	writeJSON(w, map[string]any{"nodes": nodes})
}

// desired maps node ids to [release, rollout] of the newest of the last
// maxFleetRollouts rollouts that succeeded on them.
func (s *Server) desired(r *http.Request) (map[string][2]string, error) {
	list, err := s.rollouts(r, "", func(ro *outpostv1.Rollout) bool { return ro.GetNodeCounts().GetSucceeded() > 0 })
	if err != nil {
		return nil, err
	}
	if len(list) > maxFleetRollouts {
		list = list[:maxFleetRollouts]
	}
	out := map[string][2]string{}
	for _, ro := range list {
		token := ""
		for range maxPages {
			ctx, cancel := unary(r)
			resp, err := s.cfg.CP.ListRolloutNodes(ctx, &outpostv1.ListRolloutNodesRequest{RolloutId: ro.GetId(), State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, PageToken: token, PageSize: 1000})
			cancel()
			if err != nil {
				return nil, err
			}
			for _, n := range resp.GetNodes() {
				if _, ok := out[n.GetNodeId()]; !ok {
					out[n.GetNodeId()] = [2]string{n.GetRelease(), ro.GetId()}
				}
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
	}
	return out, nil
}

// diffLine is one line of a plan diff: op is " ", "+" or "-".
type diffLine struct {
	Op   string `json:"op"`
	Text string `json:"text"`
}

// diff answers the rollout's plan against that of the app's previous
// revision, line by line.
func (s *Server) diff(w http.ResponseWriter, r *http.Request) {
	ro, ok := s.rollout(w, r)
	if !ok {
		return
	}
	ctx, cancel := unary(r)
	defer cancel()
	var prev *outpostv1.Revision
	token := ""
	for range maxPages {
		revs, err := s.cfg.CP.ListRevisions(ctx, &outpostv1.ListRevisionsRequest{App: ro.GetApp(), PageToken: token, PageSize: 500})
		if err != nil {
			writeRPCError(w, "list revisions", err)
			return
		}
		for _, rv := range revs.GetRevisions() {
			if rv.GetRevision() < ro.GetRevision() && (prev == nil || rv.GetRevision() > prev.GetRevision()) {
				prev = rv
			}
		}
		if token = revs.GetNextPageToken(); token == "" {
			break
		}
	}
	out := map[string]any{"revision": ro.GetRevision(), "digest": ro.GetArtifact().GetSha256()}
	var before *outpostv1.PlanSpec
	if prev != nil {
		pr, err := s.cfg.CP.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: prev.GetRolloutId()})
		if err != nil {
			writeRPCError(w, "get previous rollout", err)
			return
		}
		before = pr.GetRollout().GetPlan()
		out["previous"] = map[string]any{"revision": prev.GetRevision(), "rollout": prev.GetRolloutId(), "digest": prev.GetArtifact().GetSha256()}
	}
	out["lines"] = lineDiff(planLines(before), planLines(ro.GetPlan()))
	writeJSON(w, out)
}

func planLines(p *outpostv1.PlanSpec) []string {
	if p == nil {
		return nil
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(p)
	if err != nil {
		return nil
	}
	// protojson varies its spacing on purpose; normalise through encoding/json.
	var v any
	if json.Unmarshal(b, &v) == nil {
		if nb, err := json.MarshalIndent(v, "", "  "); err == nil {
			b = nb
		}
	}
	return strings.Split(string(b), "\n")
}

// lineDiff is the longest-common-subsequence diff of a and b; sides
// longer than maxDiffLines are shown whole as removed and added.
func lineDiff(a, b []string) []diffLine {
	var out []diffLine
	if len(a) > maxDiffLines || len(b) > maxDiffLines {
		for _, l := range a {
			out = append(out, diffLine{"-", l})
		}
		for _, l := range b {
			out = append(out, diffLine{"+", l})
		}
		return out
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			out = append(out, diffLine{" ", a[i]})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, diffLine{"-", a[i]})
			i++
		default:
			out = append(out, diffLine{"+", b[j]})
			j++
		}
	}
	for ; i < len(a); i++ {
		out = append(out, diffLine{"-", a[i]})
	}
	for ; j < len(b); j++ {
		out = append(out, diffLine{"+", b[j]})
	}
	return out
}

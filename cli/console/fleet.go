package console

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// maxDiffLines bounds each side of a plan diff.
const maxDiffLines = 2000

// fleetNode is a node of the fleet page.
type fleetNode struct {
	ID         string            `json:"id"`
	Address    string            `json:"address"`
	Datacenter string            `json:"datacenter"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Desired is the release Outpost last activated on the node, and the
	// rollout that did; empty before its first successful deployment.
	Desired        string `json:"desired"`
	DesiredRollout string `json:"desiredRollout"`
	// Observation holds what the node was last seen running, and its
	// drift; nil before its first verification.
	Observation *observation `json:"observation,omitempty"`
}

// observation is what a gateway last saw on a node, for people.
type observation struct {
	// Result is "ok", or why the node could not be observed
	// ("unreachable", "auth", "host_key", "failed", "no_gateway").
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// Release is the release current points to; "(target)" when it
	// points elsewhere, "(none)" when there is none.
	Release string `json:"release"`
	Gateway string `json:"gateway,omitempty"`
	Time    string `json:"time,omitempty"`
	// Lock names the holder of a lock the node holds; empty for none.
	Lock        string `json:"lock,omitempty"`
	LastHistory string `json:"lastHistory,omitempty"`
	// Drift lists the kinds of drift ("release_switched", ...); empty
	// means the node runs what Outpost activated. DriftSince is when the
	// drift was first seen.
	Drift      []string `json:"drift"`
	DriftSince string   `json:"driftSince,omitempty"`
}

// observe maps what the control plane observed on a node (its status) to
// the fleet page's columns; nil when the node was never observed.
func observe(n *outpostv1.Node) *observation {
	st := n.GetStatus()
	o := st.GetObservation()
	if o == nil {
		return nil
	}
	out := &observation{
		Result:      strings.ToLower(strings.TrimPrefix(o.GetResult().String(), "OBSERVE_RESULT_")),
		Error:       o.GetError(),
		Gateway:     o.GetGateway(),
		LastHistory: o.GetLastHistory(),
		Drift:       []string{},
	}
	if o.GetTime() != nil {
		out.Time = o.GetTime().AsTime().UTC().Format(time.RFC3339)
	}
	if o.GetResult() == outpostv1.ObserveResult_OBSERVE_RESULT_OK {
		switch {
		case o.GetRelease() != "":
			out.Release = o.GetRelease()
		case o.GetCurrentOther() != "":
			out.Release = "(" + o.GetCurrentOther() + ")"
		default:
			out.Release = "(none)"
		}
	}
	if o.GetLockHeld() {
		out.Lock = strings.TrimSpace(o.GetLockOwner() + " " + o.GetLockRollout())
		if out.Lock == "" {
			out.Lock = "held"
		}
	}
	for _, k := range st.GetDrift() {
		out.Drift = append(out.Drift, strings.ToLower(strings.TrimPrefix(k.String(), "DRIFT_KIND_")))
	}
	if t := st.GetDriftSince(); t != nil && len(out.Drift) > 0 {
		out.DriftSince = t.AsTime().UTC().Format(time.RFC3339)
	}
	return out
}

func fleetNodeOf(n *outpostv1.Node) fleetNode {
	d := n.GetStatus().GetDesired()
	return fleetNode{ID: n.GetId(), Address: n.GetAddress(), Datacenter: n.GetDatacenter(), Labels: n.GetLabels(),
		Desired: d.GetRelease(), DesiredRollout: d.GetRolloutId(), Observation: observe(n)}
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request) {
	nodes := []fleetNode{}
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
			nodes = append(nodes, fleetNodeOf(n))
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	writeJSON(w, map[string]any{"nodes": nodes})
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

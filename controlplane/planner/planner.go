package planner

import (
	"fmt"
	"sort"
	"strings"

	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Stage names of the presets.
const (
	StageRolling = "rolling"
	StageCanary  = "canary"
	StageRest    = "rest"
)

// tierLabel is the node label the tiered preset groups by.
const tierLabel = "tier"

// tiers is the tiered preset: tier 1 one node at a time, tier 2 in batches
// of 50, tier 3 all at once (DESIGN.md, Strategies).
var tiers = []struct {
	name, value, batch string
}{
	{"tier1", "1", "1"},
	{"tier2", "2", "50"},
	{"tier3", "3", "100%"},
}

// UnsupportedError is a plan feature that validates but that the rollout
// engine does not run yet. Field is the plan's YAML path.
type UnsupportedError struct {
	Field string
	What  string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s: %s is not supported yet", e.Field, e.What)
}

// Result is an expanded plan.
type Result struct {
	// Stages in execution order, batches filled, state PENDING, current
	// batch -1, no counts.
	Stages []*outpostv1.Stage
	// Nodes holds one PENDING record per selected node, sorted by node id,
	// with stage, batch and datacenter set. RolloutId is left empty.
	Nodes []*outpostv1.RolloutNode
}

// stageSpec is a stage before its nodes are split into batches.
type stageSpec struct {
	field       string // plan path, for errors
	name        string
	selector    map[string]string
	count       int32
	percent     int32
	batch       string
	maxParallel int32
	maxFail     int32
	// keepEmpty keeps a stage that selected no node (explicit stages:
	// people should see that their stage matched nothing).
	keepEmpty bool
}

// Expand splits nodes (the plan's selected targets, as returned by
// plan.SelectNodes) into stages and batches as spec's strategy says. spec
// must be valid (plan.Validate). Errors are *plan.FieldError for plans that
// cannot be expanded over these nodes and *UnsupportedError for features
// the engine does not run yet.
func Expand(spec *outpostv1.PlanSpec, nodes []*outpostv1.Node) (*Result, error) {
	if len(nodes) == 0 {
		return nil, &plan.FieldError{Field: "targets.selector", Err: fmt.Errorf("selects no node")}
	}
	sorted := append([]*outpostv1.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetId() < sorted[j].GetId() })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].GetId() == sorted[i-1].GetId() {
			return nil, fmt.Errorf("node %q selected twice", sorted[i].GetId())
		}
	}
	specs, err := stageSpecs(spec.GetStrategy(), sorted)
	if err != nil {
		return nil, err
	}
	return split(specs, sorted)
}

// stageSpecs resolves the strategy into stage specs with defaults applied.
func stageSpecs(s *outpostv1.PlanStrategy, nodes []*outpostv1.Node) ([]stageSpec, error) {
	maxFail := int32(plan.DefaultMaxFailPercent)
	if s != nil && s.MaxFailPercent != nil {
		maxFail = s.GetMaxFailPercent()
	}
	batch := s.GetBatch()
	if batch == "" {
		batch = "1"
	}
	switch s.GetType() {
	case plan.StrategyBlueGreen:
		return nil, &UnsupportedError{Field: "strategy.type", What: "blue_green"}
	case plan.StrategyTiered:
		var out []stageSpec
		for _, t := range tiers {
			out = append(out, stageSpec{
				field: "strategy.type", name: t.name, selector: map[string]string{tierLabel: t.value},
				batch: t.batch, maxFail: maxFail,
			})
		}
		var untiered []string
		for _, n := range nodes {
			switch n.GetLabels()[tierLabel] {
			case "1", "2", "3":
			default:
				untiered = append(untiered, n.GetId())
			}
		}
		if len(untiered) > 0 {
			return nil, &plan.FieldError{Field: "strategy.type", Err: fmt.Errorf("tiered: %s without a %q label of 1, 2 or 3", listIDs(untiered), tierLabel)}
		}
		return out, nil
	}

	var out []stageSpec
	if s.GetType() == plan.StrategyCanary {
		if s.GetBake() != "" {
			return nil, &UnsupportedError{Field: "strategy.bake", What: "bake"}
		}
		if s.GetPause() != "" {
			return nil, &UnsupportedError{Field: "strategy.pause", What: "manual pause"}
		}
		count := s.GetCount()
		if count == 0 && s.GetPercent() == 0 {
			count = 1
		}
		out = append(out, stageSpec{
			field: "strategy", name: StageCanary, count: count, percent: s.GetPercent(),
			batch: "100%", maxFail: maxFail,
		})
	}
	if len(s.GetStages()) == 0 {
		name := StageRolling
		if s.GetType() == plan.StrategyCanary {
			name = StageRest
		}
		return append(out, stageSpec{field: "strategy.batch", name: name, batch: batch, maxFail: maxFail}), nil
	}
	for i, ps := range s.GetStages() {
		f := fmt.Sprintf("strategy.stages[%d]", i)
		if ps.GetBake() != "" {
			return nil, &UnsupportedError{Field: f + ".bake", What: "bake"}
		}
		if ps.GetPause() != "" {
			return nil, &UnsupportedError{Field: f + ".pause", What: "manual pause"}
		}
		st := stageSpec{
			field: f, name: ps.GetName(), selector: ps.GetSelector(), count: ps.GetCount(),
			percent: ps.GetPercent(), batch: ps.GetBatch(), maxParallel: ps.GetMaxParallel(),
			maxFail: maxFail, keepEmpty: true,
		}
		if st.batch == "" {
			st.batch = batch
		}
		if ps.MaxFailPercent != nil {
			st.maxFail = ps.GetMaxFailPercent()
		}
		if st.name == StageCanary && s.GetType() == plan.StrategyCanary {
			return nil, &plan.FieldError{Field: f + ".name", Err: fmt.Errorf("%q is the canary stage's name; choose another", st.name)}
		}
		out = append(out, st)
	}
	return out, nil
}

// split assigns nodes to stages in order (a node goes to the first stage
// whose selector and limits take it) and cuts each stage into batches.
func split(specs []stageSpec, nodes []*outpostv1.Node) (*Result, error) {
	taken := make(map[string]bool, len(nodes))
	res := &Result{}
	byID := make(map[string]*outpostv1.RolloutNode, len(nodes))
	for _, sp := range specs {
		limit := len(nodes)
		if sp.count > 0 {
			limit = min(limit, int(sp.count))
		}
		if sp.percent > 0 {
			// "At most percent of the plan's nodes", but a stage that asks for
			// some share of a small fleet still gets one node.
			limit = min(limit, max(1, len(nodes)*int(sp.percent)/100))
		}
		var ids []string
		for _, n := range nodes {
			if len(ids) == limit {
				break
			}
			if taken[n.GetId()] || !plan.MatchSelector(sp.selector, n.GetLabels()) {
				continue
			}
			taken[n.GetId()] = true
			ids = append(ids, n.GetId())
			rn := &outpostv1.RolloutNode{
				NodeId:     n.GetId(),
				Datacenter: n.GetDatacenter(),
				Stage:      sp.name,
				State:      outpostv1.NodeState_NODE_STATE_PENDING,
			}
			byID[n.GetId()] = rn
			res.Nodes = append(res.Nodes, rn)
		}
		if len(ids) == 0 && !sp.keepEmpty {
			continue
		}
		b, err := plan.ParseBatch(sp.field+".batch", sp.batch)
		if err != nil {
			return nil, err
		}
		st := &outpostv1.Stage{
			Name:           sp.name,
			State:          outpostv1.StageState_STAGE_STATE_PENDING,
			MaxParallel:    sp.maxParallel,
			MaxFailPercent: sp.maxFail,
			CurrentBatch:   -1,
		}
		size := b.Size(len(ids))
		for start := 0; start < len(ids); start += size {
			idx := int32(len(st.Batches))
			chunk := ids[start:min(start+size, len(ids))]
			for _, id := range chunk {
				byID[id].Batch = idx
			}
			st.Batches = append(st.Batches, &outpostv1.Batch{Index: idx, NodeIds: append([]string(nil), chunk...)})
		}
		res.Stages = append(res.Stages, st)
	}
	var left []string
	for _, n := range nodes {
		if !taken[n.GetId()] {
			left = append(left, n.GetId())
		}
	}
	if len(left) > 0 {
		return nil, &plan.FieldError{Field: "strategy.stages", Err: fmt.Errorf("%s selected by the plan but in no stage (add a last stage without selector)", listIDs(left))}
	}
	sort.Slice(res.Nodes, func(i, j int) bool { return res.Nodes[i].GetNodeId() < res.Nodes[j].GetNodeId() })
	return res, nil
}

// listIDs names a few ids for an error message.
func listIDs(ids []string) string {
	const show = 5
	noun := "nodes"
	if len(ids) == 1 {
		noun = "node"
	}
	if len(ids) <= show {
		return noun + " " + strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%d nodes (%s, ...)", len(ids), strings.Join(ids[:show], ", "))
}

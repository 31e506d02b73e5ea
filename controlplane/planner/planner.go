package planner

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Stage names of the presets.
const (
	StageRolling = "rolling"
	StageCanary  = "canary"
	StageRest    = "rest"
	// StageSwitch is the blue/green traffic switch.
	StageSwitch = "switch"
)

// Labels the presets group nodes by.
const (
	TierLabel  = "tier"
	ColorLabel = "color"
)

// tiers is the tiered preset: tier 1 one node at a time and strict, tier
// 2 in batches of 50, tier 3 all at once (DESIGN.md, Strategies).
var tiers = []struct {
	name, value, batch string
	strict             bool
}{
	{"tier1", "1", "1", true},
	{"tier2", "2", "50", false},
	{"tier3", "3", "100%", false},
}

// UnsupportedError is a plan feature that validates but that the rollout
// engine does not run. Field is the plan's YAML path.
type UnsupportedError struct {
	Field string
	What  string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s: %s is not supported yet", e.Field, e.What)
}

// Options carry what expansion needs besides the plan and its nodes.
type Options struct {
	// SwitchNode is the inventory node strategy.switch_node names
	// (blue_green); nil when the inventory has none of that id.
	SwitchNode *outpostv1.Node
	// LiveColor is the color serving traffic now (blue_green); "" when
	// unknown (no earlier blue/green rollout of the app switched traffic):
	// then the first color in sort order is deployed and switched to.
	LiveColor string
	// SwitchBackTo makes a blue/green expansion that deploys nothing and
	// only switches traffic back to this color (an undo to a release that
	// color still holds); "" means a normal expansion.
	SwitchBackTo string
}

// Result is an expanded plan.
type Result struct {
	// Stages in execution order, batches filled, state PENDING, current
	// batch -1, no counts.
	Stages []*outpostv1.Stage
	// Nodes holds one PENDING record per node of the rollout (the
	// selected targets, minus a blue/green live color, plus a switch
	// node), sorted by node id, with stage, batch and datacenter set.
	// RolloutId is left empty.
	Nodes []*outpostv1.RolloutNode
	// BlueGreen is set for blue_green plans.
	BlueGreen *outpostv1.BlueGreen
}

// stageSpec is a stage before its nodes are split into batches.
type stageSpec struct {
	field       string // plan path, for errors
	name        string
	kind        outpostv1.StageKind
	selector    map[string]string
	count       int32
	percent     int32
	batch       string
	maxParallel int32
	maxFail     int32
	bake        time.Duration
	manualPause bool
	// analysis is the stage's canary analysis; nil means none.
	analysis *outpostv1.PlanAnalysis
	// keepEmpty keeps a stage that selected no node (explicit stages:
	// people should see that their stage matched nothing).
	keepEmpty bool
	// only, when set, are the stage's nodes, whatever the selector says
	// (the switch node, which is no target).
	only []*outpostv1.Node
}

// Expand splits nodes (the plan's selected targets, as returned by
// plan.SelectNodes) into stages and batches as spec's strategy says. spec
// must be valid (plan.Validate). Errors are *plan.FieldError for plans that
// cannot be expanded over these nodes and *UnsupportedError for features
// the engine does not run.
func Expand(spec *outpostv1.PlanSpec, nodes []*outpostv1.Node, opts Options) (*Result, error) {
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
	if spec.GetStrategy().GetType() == plan.StrategyBlueGreen {
		return expandBlueGreen(spec.GetStrategy(), sorted, opts)
	}
	specs, err := stageSpecs(spec.GetStrategy(), sorted)
	if err != nil {
		return nil, err
	}
	return split(specs, sorted)
}

// maxFailOf is the strategy's failure budget, default 10.
func maxFailOf(s *outpostv1.PlanStrategy) int32 {
	if s != nil && s.MaxFailPercent != nil {
		return s.GetMaxFailPercent()
	}
	return plan.DefaultMaxFailPercent
}

// duration parses a validated duration; "" is zero.
func duration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return plan.ParseDuration(field, s)
}

// stageSpecs resolves the strategy into stage specs with defaults applied.
func stageSpecs(s *outpostv1.PlanStrategy, nodes []*outpostv1.Node) ([]stageSpec, error) {
	maxFail := maxFailOf(s)
	batch := s.GetBatch()
	if batch == "" {
		batch = "1"
	}
	if s.GetType() == plan.StrategyTiered {
		var out []stageSpec
		for _, t := range tiers {
			st := stageSpec{
				field: "strategy.type", name: t.name, selector: map[string]string{TierLabel: t.value},
				batch: t.batch, maxFail: maxFail,
			}
			if t.strict {
				st.maxFail = 0
			}
			out = append(out, st)
		}
		var untiered []string
		for _, n := range nodes {
			switch n.GetLabels()[TierLabel] {
			case "1", "2", "3":
			default:
				untiered = append(untiered, n.GetId())
			}
		}
		if len(untiered) > 0 {
			return nil, &plan.FieldError{Field: "strategy.type", Err: fmt.Errorf("tiered: %s without a %q label of 1, 2 or 3", listIDs(untiered), TierLabel)}
		}
		return out, nil
	}

	var out []stageSpec
	if s.GetType() == plan.StrategyCanary {
		bake, err := duration("strategy.bake", s.GetBake())
		if err != nil {
			return nil, err
		}
		count := s.GetCount()
		if count == 0 && s.GetPercent() == 0 {
			count = 1
		}
		out = append(out, stageSpec{
			field: "strategy", name: StageCanary, count: count, percent: s.GetPercent(),
			batch: "100%", maxFail: maxFail, bake: bake, manualPause: s.GetPause() == plan.PauseManual,
			analysis: s.GetAnalysis(),
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
		bake, err := duration(f+".bake", ps.GetBake())
		if err != nil {
			return nil, err
		}
		st := stageSpec{
			field: f, name: ps.GetName(), selector: ps.GetSelector(), count: ps.GetCount(),
			percent: ps.GetPercent(), batch: ps.GetBatch(), maxParallel: ps.GetMaxParallel(),
			maxFail: maxFail, keepEmpty: true, bake: bake, manualPause: ps.GetPause() == plan.PauseManual,
			analysis: ps.GetAnalysis(),
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

// expandBlueGreen deploys the idle color and then switches traffic to it.
func expandBlueGreen(s *outpostv1.PlanStrategy, nodes []*outpostv1.Node, opts Options) (*Result, error) {
	if len(s.GetStages()) > 0 {
		return nil, &UnsupportedError{Field: "strategy.stages", What: "stages with blue_green"}
	}
	sw := opts.SwitchNode
	if sw == nil {
		return nil, &plan.FieldError{Field: "strategy.switch_node", Err: fmt.Errorf("%q: no such node in the inventory", s.GetSwitchNode())}
	}
	byColor := map[string][]*outpostv1.Node{}
	var uncolored []string
	for _, n := range nodes {
		if n.GetId() == sw.GetId() {
			return nil, &plan.FieldError{Field: "strategy.switch_node", Err: fmt.Errorf("%q is also one of the targets: the switch node must be outside both colors", sw.GetId())}
		}
		c := n.GetLabels()[ColorLabel]
		if c == "" {
			uncolored = append(uncolored, n.GetId())
			continue
		}
		byColor[c] = append(byColor[c], n)
	}
	if len(uncolored) > 0 {
		return nil, &plan.FieldError{Field: "strategy.type", Err: fmt.Errorf("blue_green: %s without a %q label", listIDs(uncolored), ColorLabel)}
	}
	colors := make([]string, 0, len(byColor))
	for c := range byColor {
		colors = append(colors, c)
	}
	sort.Strings(colors)
	if len(colors) != 2 {
		return nil, &plan.FieldError{Field: "strategy.type", Err: fmt.Errorf("blue_green: the targets have %d %q values (%s); want exactly two", len(colors), ColorLabel, strings.Join(colors, ", "))}
	}
	for _, c := range colors {
		if c == StageSwitch {
			return nil, &plan.FieldError{Field: "strategy.type", Err: fmt.Errorf("blue_green: color %q is the switch stage's name; choose another", c)}
		}
	}
	live := opts.LiveColor
	if live != colors[0] && live != colors[1] {
		live = ""
	}
	switchStage := stageSpec{
		field: "strategy.switch_node", name: StageSwitch, kind: outpostv1.StageKind_STAGE_KIND_SWITCH,
		batch: "1", only: []*outpostv1.Node{sw},
	}
	if back := opts.SwitchBackTo; back != "" {
		if back != colors[0] && back != colors[1] {
			return nil, fmt.Errorf("blue_green: cannot switch back to %q: the targets' colors are %s", back, strings.Join(colors, ", "))
		}
		res, err := split([]stageSpec{switchStage}, nil)
		if err != nil {
			return nil, err
		}
		res.BlueGreen = &outpostv1.BlueGreen{TargetColor: back, LiveColor: live, SwitchBack: true}
		return res, nil
	}
	target := colors[0]
	if live == colors[0] {
		target = colors[1]
	}
	batch := s.GetBatch()
	if batch == "" {
		batch = "100%"
	}
	deploy := stageSpec{
		field: "strategy.batch", name: target, selector: map[string]string{ColorLabel: target},
		batch: batch, maxFail: maxFailOf(s), manualPause: s.GetPause() == plan.PauseManual,
	}
	res, err := split([]stageSpec{deploy, switchStage}, byColor[target])
	if err != nil {
		return nil, err
	}
	res.BlueGreen = &outpostv1.BlueGreen{TargetColor: target, LiveColor: live}
	return res, nil
}

// split assigns nodes to stages in order (a node goes to the first stage
// whose selector and limits take it) and cuts each stage into batches.
func split(specs []stageSpec, nodes []*outpostv1.Node) (*Result, error) {
	taken := make(map[string]bool, len(nodes))
	res := &Result{}
	byID := make(map[string]*outpostv1.RolloutNode, len(nodes))
	for _, sp := range specs {
		candidates := nodes
		limit := len(nodes)
		if sp.only != nil {
			candidates, limit = sp.only, len(sp.only)
		}
		if sp.count > 0 {
			limit = min(limit, int(sp.count))
		}
		if sp.percent > 0 {
			// "At most percent of the plan's nodes", but a stage that asks for
			// some share of a small fleet still gets one node.
			limit = min(limit, max(1, len(nodes)*int(sp.percent)/100))
		}
		var ids []string
		for _, n := range candidates {
			if len(ids) == limit {
				break
			}
			if taken[n.GetId()] || (sp.only == nil && !plan.MatchSelector(sp.selector, n.GetLabels())) {
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
			ManualPause:    sp.manualPause,
			Kind:           sp.kind,
		}
		if sp.kind == outpostv1.StageKind_STAGE_KIND_UNSPECIFIED {
			st.Kind = outpostv1.StageKind_STAGE_KIND_DEPLOY
		}
		if sp.bake > 0 {
			st.Bake = durationpb.New(sp.bake)
		}
		if sp.analysis != nil {
			st.Analysis = proto.CloneOf(sp.analysis)
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

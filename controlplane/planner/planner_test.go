package planner

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
)

func nodes(n int, labels func(i int) map[string]string) []*outpostv1.Node {
	var out []*outpostv1.Node
	// Reverse order: Expand must sort.
	for i := n - 1; i >= 0; i-- {
		var l map[string]string
		if labels != nil {
			l = labels(i)
		}
		out = append(out, &outpostv1.Node{Id: fmt.Sprintf("n%02d", i), Datacenter: "dc1", Labels: l})
	}
	return out
}

// shape renders stages as "name:[batch sizes] fail%", easy to compare.
func shape(r *Result) []string {
	var out []string
	for _, st := range r.Stages {
		var sizes []string
		for _, b := range st.GetBatches() {
			sizes = append(sizes, fmt.Sprint(len(b.GetNodeIds())))
		}
		extra := ""
		if d := st.GetBake().AsDuration(); d > 0 {
			extra += " bake=" + d.String()
		}
		if st.GetManualPause() {
			extra += " manual"
		}
		if st.GetKind() == outpostv1.StageKind_STAGE_KIND_SWITCH {
			extra += " switch"
		}
		out = append(out, fmt.Sprintf("%s:[%s] %d%% par=%d%s", st.GetName(), strings.Join(sizes, " "), st.GetMaxFailPercent(), st.GetMaxParallel(), extra))
	}
	return out
}

func ptr(v int32) *int32 { return &v }

func TestExpandShapes(t *testing.T) {
	tierOf := func(i int) map[string]string { return map[string]string{"tier": fmt.Sprint(i%3 + 1)} }
	tests := []struct {
		name   string
		strat  *outpostv1.PlanStrategy
		n      int
		labels func(int) map[string]string
		want   []string
	}{
		{"default rolling one at a time", nil, 3, nil, []string{"rolling:[1 1 1] 10% par=0"}},
		{"rolling count", &outpostv1.PlanStrategy{Type: "rolling", Batch: "5"}, 20, nil, []string{"rolling:[5 5 5 5] 10% par=0"}},
		{"rolling uneven", &outpostv1.PlanStrategy{Batch: "4"}, 10, nil, []string{"rolling:[4 4 2] 10% par=0"}},
		{"rolling percent rounds up", &outpostv1.PlanStrategy{Batch: "25%", MaxFailPercent: ptr(0)}, 10, nil, []string{"rolling:[3 3 3 1] 0% par=0"}},
		{"rolling all", &outpostv1.PlanStrategy{Batch: "100%", MaxFailPercent: ptr(50)}, 7, nil, []string{"rolling:[7] 50% par=0"}},
		// Tier 1 is strict whatever the plan's budget.
		{"tiered", &outpostv1.PlanStrategy{Type: "tiered"}, 9, tierOf, []string{"tier1:[1 1 1] 0% par=0", "tier2:[3] 10% par=0", "tier3:[3] 10% par=0"}},
		{"tiered budget", &outpostv1.PlanStrategy{Type: "tiered", MaxFailPercent: ptr(25)}, 120, tierOf, []string{
			"tier1:[" + strings.TrimSpace(strings.Repeat("1 ", 40)) + "] 0% par=0", "tier2:[40] 25% par=0", "tier3:[40] 25% par=0"}},
		{"tiered batches of 50", &outpostv1.PlanStrategy{Type: "tiered"}, 120, func(i int) map[string]string {
			if i < 110 {
				return map[string]string{"tier": "2"}
			}
			return map[string]string{"tier": "3"}
		}, []string{"tier2:[50 50 10] 10% par=0", "tier3:[10] 10% par=0"}},
		{"canary bake and pause", &outpostv1.PlanStrategy{Type: "canary", Count: 2, Bake: "90s", Pause: "manual"}, 5, nil,
			[]string{"canary:[2] 10% par=0 bake=1m30s manual", "rest:[1 1 1] 10% par=0"}},
		{"canary default", &outpostv1.PlanStrategy{Type: "canary", Batch: "50%"}, 5, nil, []string{"canary:[1] 10% par=0", "rest:[2 2] 10% par=0"}},
		{"canary percent", &outpostv1.PlanStrategy{Type: "canary", Percent: 20}, 10, nil, []string{"canary:[2] 10% par=0", "rest:[1 1 1 1 1 1 1 1] 10% par=0"}},
		{"explicit stages", &outpostv1.PlanStrategy{Batch: "2", Stages: []*outpostv1.PlanStage{
			{Name: "first", Count: 1, Bake: "2m", Pause: "manual"},
			{Name: "t2", Selector: map[string]string{"tier": "2"}, Batch: "100%", MaxParallel: 2, MaxFailPercent: ptr(30)},
			{Name: "none", Selector: map[string]string{"tier": "9"}},
			{Name: "rest"},
		}}, 9, tierOf, []string{"first:[1] 10% par=0 bake=2m0s manual", "t2:[3] 30% par=2", "none:[] 10% par=0", "rest:[2 2 1] 10% par=0"}},
		// A custom tier order: tiers as explicit stages.
		{"tiers in another order", &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{
			{Name: "tier3", Selector: map[string]string{"tier": "3"}, Batch: "100%"},
			{Name: "tier1", Selector: map[string]string{"tier": "1"}, MaxFailPercent: ptr(0)},
			{Name: "tier2", Selector: map[string]string{"tier": "2"}, Batch: "50"},
		}}, 6, tierOf, []string{"tier3:[2] 10% par=0", "tier1:[1 1] 0% par=0", "tier2:[2] 10% par=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &outpostv1.PlanSpec{Strategy: tt.strat}
			r, err := Expand(spec, nodes(tt.n, tt.labels), Options{})
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if diff := cmp.Diff(tt.want, shape(r)); diff != "" {
				t.Errorf("stages (-want +got):\n%s", diff)
			}
			checkConsistent(t, r, tt.n)
		})
	}
}

// checkConsistent verifies every node is in exactly one batch, matching its record.
func checkConsistent(t *testing.T, r *Result, n int) {
	t.Helper()
	if len(r.Nodes) != n {
		t.Fatalf("got %d node records, want %d", len(r.Nodes), n)
	}
	seen := map[string]bool{}
	rec := map[string]*outpostv1.RolloutNode{}
	for i, rn := range r.Nodes {
		if i > 0 && r.Nodes[i-1].GetNodeId() >= rn.GetNodeId() {
			t.Errorf("node records not sorted at %d", i)
		}
		if rn.GetState() != outpostv1.NodeState_NODE_STATE_PENDING || rn.GetDatacenter() != "dc1" {
			t.Errorf("record %v: want PENDING in dc1", rn)
		}
		rec[rn.GetNodeId()] = rn
	}
	for _, st := range r.Stages {
		if st.GetCurrentBatch() != -1 || st.GetState() != outpostv1.StageState_STAGE_STATE_PENDING {
			t.Errorf("stage %s: current_batch %d state %v", st.GetName(), st.GetCurrentBatch(), st.GetState())
		}
		for bi, b := range st.GetBatches() {
			if b.GetIndex() != int32(bi) {
				t.Errorf("stage %s batch %d has index %d", st.GetName(), bi, b.GetIndex())
			}
			for _, id := range b.GetNodeIds() {
				if seen[id] {
					t.Errorf("node %s in two batches", id)
				}
				seen[id] = true
				if rn := rec[id]; rn.GetStage() != st.GetName() || rn.GetBatch() != int32(bi) {
					t.Errorf("node %s record says %s/%d, batch says %s/%d", id, rn.GetStage(), rn.GetBatch(), st.GetName(), bi)
				}
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%d nodes in batches, want %d", len(seen), n)
	}
}

func TestExpandBatchesSortedByID(t *testing.T) {
	r, err := Expand(&outpostv1.PlanSpec{Strategy: &outpostv1.PlanStrategy{Batch: "2"}}, nodes(4, nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []*outpostv1.Batch{{Index: 0, NodeIds: []string{"n00", "n01"}}, {Index: 1, NodeIds: []string{"n02", "n03"}}}
	if got := r.Stages[0].GetBatches(); !cmp.Equal(want, got, cmp.Comparer(proto.Equal)) {
		t.Errorf("batches = %v, want %v", got, want)
	}
}

func colorOf(i int) map[string]string {
	return map[string]string{"color": []string{"blue", "green"}[i%2]}
}

func TestExpandBlueGreen(t *testing.T) {
	lb := &outpostv1.Node{Id: "lb-1", Datacenter: "dc1"}
	strat := &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb-1", SwitchHook: "sh switch"}
	tests := []struct {
		name  string
		strat *outpostv1.PlanStrategy
		opts  Options
		want  []string
		bg    *outpostv1.BlueGreen
		nodes []string
	}{
		{"first: blue", strat, Options{SwitchNode: lb}, []string{"blue:[3] 10% par=0", "switch:[1] 0% par=0 switch"},
			&outpostv1.BlueGreen{TargetColor: "blue"}, []string{"lb-1", "n00", "n02", "n04"}},
		{"blue live: green", strat, Options{SwitchNode: lb, LiveColor: "blue"}, []string{"green:[2] 10% par=0", "switch:[1] 0% par=0 switch"},
			&outpostv1.BlueGreen{TargetColor: "green", LiveColor: "blue"}, []string{"lb-1", "n01", "n03"}},
		{"unknown live color", strat, Options{SwitchNode: lb, LiveColor: "red"}, []string{"blue:[3] 10% par=0", "switch:[1] 0% par=0 switch"},
			&outpostv1.BlueGreen{TargetColor: "blue"}, []string{"lb-1", "n00", "n02", "n04"}},
		{"batches and manual pause", &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb-1", SwitchHook: "x", Batch: "2", Pause: "manual"},
			Options{SwitchNode: lb, LiveColor: "green"}, []string{"blue:[2 1] 10% par=0 manual", "switch:[1] 0% par=0 switch"},
			&outpostv1.BlueGreen{TargetColor: "blue", LiveColor: "green"}, []string{"lb-1", "n00", "n02", "n04"}},
		{"switch back", strat, Options{SwitchNode: lb, LiveColor: "green", SwitchBackTo: "blue"}, []string{"switch:[1] 0% par=0 switch"},
			&outpostv1.BlueGreen{TargetColor: "blue", LiveColor: "green", SwitchBack: true}, []string{"lb-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Expand(&outpostv1.PlanSpec{Strategy: tt.strat}, nodes(5, colorOf), tt.opts)
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if diff := cmp.Diff(tt.want, shape(r)); diff != "" {
				t.Errorf("stages (-want +got):\n%s", diff)
			}
			if !proto.Equal(r.BlueGreen, tt.bg) {
				t.Errorf("blue_green = %v, want %v", r.BlueGreen, tt.bg)
			}
			var ids []string
			for _, n := range r.Nodes {
				ids = append(ids, n.GetNodeId())
			}
			if diff := cmp.Diff(tt.nodes, ids); diff != "" {
				t.Errorf("node records (-want +got):\n%s", diff)
			}
			last := r.Stages[len(r.Stages)-1]
			if last.GetName() != "switch" || len(last.GetBatches()) != 1 || last.GetBatches()[0].GetNodeIds()[0] != "lb-1" {
				t.Errorf("switch stage = %v", last)
			}
		})
	}

	errs := []struct {
		name   string
		labels func(int) map[string]string
		opts   Options
		want   string
	}{
		{"one color", func(int) map[string]string { return map[string]string{"color": "blue"} }, Options{SwitchNode: lb}, "exactly two"},
		{"three colors", func(i int) map[string]string { return map[string]string{"color": fmt.Sprint(i % 3)} }, Options{SwitchNode: lb}, "exactly two"},
		{"uncolored", func(i int) map[string]string {
			if i == 4 {
				return nil
			}
			return colorOf(i)
		}, Options{SwitchNode: lb}, "n04 without"},
		{"switch node is a target", colorOf, Options{SwitchNode: &outpostv1.Node{Id: "n01"}}, "also one of the targets"},
		{"switch back to a stranger", colorOf, Options{SwitchNode: lb, SwitchBackTo: "red"}, "cannot switch back"},
	}
	for _, tt := range errs {
		_, err := Expand(&outpostv1.PlanSpec{Strategy: strat}, nodes(5, tt.labels), tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Expand error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestExpandErrors(t *testing.T) {
	tests := []struct {
		name        string
		strat       *outpostv1.PlanStrategy
		labels      func(int) map[string]string
		field       string
		unsupported bool
	}{
		{"blue green without switch node", &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb"}, colorOf, "strategy.switch_node", false},
		{"blue green with stages", &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb", Stages: []*outpostv1.PlanStage{{Name: "a"}}}, colorOf, "strategy.stages", true},
		{"leftover nodes", &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "a", Count: 1}}}, nil, "strategy.stages", false},
		{"tiered without tier", &outpostv1.PlanStrategy{Type: "tiered"}, func(i int) map[string]string { return map[string]string{"tier": "7"} }, "strategy.type", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Expand(&outpostv1.PlanSpec{Strategy: tt.strat}, nodes(3, tt.labels), Options{})
			var ue *UnsupportedError
			var fe *plan.FieldError
			switch {
			case err == nil:
				t.Fatal("Expand succeeded, want error")
			case tt.unsupported && errors.As(err, &ue):
				if ue.Field != tt.field {
					t.Errorf("field = %q, want %q (%v)", ue.Field, tt.field, err)
				}
			case !tt.unsupported && errors.As(err, &fe):
				if fe.Field != tt.field {
					t.Errorf("field = %q, want %q (%v)", fe.Field, tt.field, err)
				}
			default:
				t.Errorf("error %T %v, want unsupported=%v for %s", err, err, tt.unsupported, tt.field)
			}
		})
	}
	if _, err := Expand(&outpostv1.PlanSpec{}, nil, Options{}); err == nil {
		t.Error("Expand with no nodes succeeded")
	}
}

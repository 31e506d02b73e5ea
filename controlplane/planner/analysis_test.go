package planner

import (
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
)

// TestAnalysisGoesToItsStage: a stage's analysis, and the canary preset's,
// are copied to the rollout's stage; other stages have none.
func TestAnalysisGoesToItsStage(t *testing.T) {
	a := &outpostv1.PlanAnalysis{Count: 2, Measurements: []*outpostv1.PlanMeasurement{{Name: "e", Provider: "p", Query: "up", Success: "true"}}}
	for name, s := range map[string]*outpostv1.PlanStrategy{
		"preset": {Type: "canary", Count: 1, Analysis: a},
		"stages": {Stages: []*outpostv1.PlanStage{{Name: "canary", Count: 1, Analysis: a}, {Name: "rest"}}},
	} {
		r, err := Expand(&outpostv1.PlanSpec{Strategy: s}, nodes(4, nil), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(r.Stages) != 2 || !proto.Equal(r.Stages[0].GetAnalysis(), a) || r.Stages[1].GetAnalysis() != nil {
			t.Errorf("%s: stages %v, want the analysis on the first only", name, r.Stages)
		}
		if r.Stages[0].GetAnalysis() == a {
			t.Errorf("%s: the stage shares the plan's message instead of a copy", name)
		}
	}
}

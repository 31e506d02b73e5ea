package plan

import (
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestSelectNodesDrifted(t *testing.T) {
	drifted := &outpostv1.NodeStatus{Drift: []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED}}
	nodes := []*outpostv1.Node{
		{Id: "srv-2", Labels: map[string]string{"app": "a"}, Status: drifted},
		{Id: "srv-1", Labels: map[string]string{"app": "a"}, Status: &outpostv1.NodeStatus{}},
		{Id: "srv-3", Labels: map[string]string{"app": "b"}, Status: drifted},
	}
	spec := &outpostv1.PlanSpec{Targets: &outpostv1.PlanTargets{Selector: map[string]string{"app": "a"}, Drifted: true}}
	got, err := SelectNodes(spec, nodes)
	if err != nil || len(got) != 1 || got[0].GetId() != "srv-2" {
		t.Errorf("SelectNodes(drifted) = %v, %v; want srv-2 only", got, err)
	}
	nodes[0].Status = nil
	if _, err := SelectNodes(spec, nodes); err == nil || !strings.Contains(err.Error(), "targets.drifted") {
		t.Errorf("no drifted node: err = %v, want one naming targets.drifted", err)
	}
	spec.Targets.Drifted = false
	if got, err := SelectNodes(spec, nodes); err != nil || len(got) != 2 {
		t.Errorf("drifted unset: %d nodes, %v; want both of app a", len(got), err)
	}
}

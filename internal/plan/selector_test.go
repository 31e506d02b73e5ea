package plan

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMatchSelector(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "2", "empty": ""}
	tests := []struct {
		sel  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{}, true},
		{map[string]string{"app": "web"}, true},
		{map[string]string{"app": "web", "tier": "2"}, true},
		{map[string]string{"empty": ""}, true},
		{map[string]string{"app": "api"}, false},
		{map[string]string{"app": "web", "tier": "1"}, false},
		{map[string]string{"missing": ""}, false}, // an absent label is not an empty one
	}
	for _, tt := range tests {
		if got := MatchSelector(tt.sel, labels); got != tt.want {
			t.Errorf("MatchSelector(%v, %v) = %v, want %v", tt.sel, labels, got, tt.want)
		}
	}
	if MatchSelector(map[string]string{"app": "web"}, nil) {
		t.Error("MatchSelector matched a node without labels")
	}
}

func TestParseLabelSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{"", map[string]string{}, ""},
		{"app=web", map[string]string{"app": "web"}, ""},
		{" app = web , tier=2 ", map[string]string{"app": "web", "tier": "2"}, ""},
		{"example.com/tier=1", map[string]string{"example.com/tier": "1"}, ""},
		{"k=", map[string]string{"k": ""}, ""},
		{"app=web,app=web", map[string]string{"app": "web"}, ""},
		{"app", nil, `label selector "app": "app" must be key=value`},
		{"app==web", nil, `label selector "app==web": "app==web" must be key=value`},
		{"app=web,", nil, `label selector "app=web,": "" must be key=value`},
		{"=web", nil, `label selector "=web": "": label key must be 1 to 63 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit`},
		{"app=a b", nil, `label selector "app=a b": "a b": label value must be at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit`},
		{"app=web,app=api", nil, `label selector "app=web,app=api": key "app" given twice with different values`},
	}
	for _, tt := range tests {
		got, err := ParseLabelSelector(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseLabelSelector(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseLabelSelector(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseLabelSelector(%q) (-want +got):\n%s", tt.in, diff)
		}
		if again, err := ParseLabelSelector(FormatLabelSelector(got)); err != nil || !cmp.Equal(again, got) {
			t.Errorf("ParseLabelSelector(FormatLabelSelector(%v)) = %v, %v", got, again, err)
		}
	}
}

func TestSelectNodes(t *testing.T) {
	node := func(id, dc string, labels map[string]string) *outpostv1.Node {
		return &outpostv1.Node{Id: id, Datacenter: dc, Labels: labels}
	}
	nodes := []*outpostv1.Node{
		node("srv-3", "seoul-1", map[string]string{"app": "web"}),
		node("srv-1", "busan-1", map[string]string{"app": "web", "tier": "1"}),
		node("srv-2", "seoul-1", map[string]string{"app": "api"}),
		node("srv-0", "jeju-1", map[string]string{"app": "web"}),
	}
	ids := func(ns []*outpostv1.Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.GetId())
		}
		return out
	}
	tests := []struct {
		targets *outpostv1.PlanTargets
		want    []string
		wantErr string
	}{
		{nil, []string{"srv-0", "srv-1", "srv-2", "srv-3"}, ""},
		{&outpostv1.PlanTargets{Selector: map[string]string{"app": "web"}}, []string{"srv-0", "srv-1", "srv-3"}, ""},
		{&outpostv1.PlanTargets{Selector: map[string]string{"app": "web"}, Datacenters: []string{"seoul-1", "busan-1"}}, []string{"srv-1", "srv-3"}, ""},
		{&outpostv1.PlanTargets{Selector: map[string]string{"app": "db"}}, nil,
			`targets.selector: selector {app=db} matches none of the 4 nodes in the inventory`},
		{&outpostv1.PlanTargets{Selector: map[string]string{"app": "api"}, Datacenters: []string{"busan-1"}}, nil,
			`targets.selector: selector {app=api} in datacenters busan-1 matches none of the 4 nodes in the inventory`},
	}
	for _, tt := range tests {
		spec := &outpostv1.PlanSpec{Targets: tt.targets}
		got, err := SelectNodes(spec, nodes)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("SelectNodes(%v) error = %v, want %s", tt.targets, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("SelectNodes(%v): %v", tt.targets, err)
			continue
		}
		if diff := cmp.Diff(tt.want, ids(got)); diff != "" {
			t.Errorf("SelectNodes(%v) (-want +got):\n%s", tt.targets, diff)
		}
	}
	if got := ids(nodes); !cmp.Equal(got, []string{"srv-3", "srv-1", "srv-2", "srv-0"}) {
		t.Errorf("SelectNodes reordered its input: %v", got)
	}
}

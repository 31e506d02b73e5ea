package plan

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// MatchSelector reports whether labels carry every key of sel with the same
// value. An empty selector matches everything.
func MatchSelector(sel, labels map[string]string) bool {
	for k, v := range sel {
		got, ok := labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

// ParseLabelSelector parses "k=v,k2=v2" (spaces around items are ignored)
// into a selector. The empty string is the empty selector, which matches
// every node.
func ParseLabelSelector(s string) (map[string]string, error) {
	sel := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		k, v, ok := strings.Cut(item, "=")
		if !ok || strings.HasPrefix(v, "=") {
			return nil, fmt.Errorf("label selector %q: %q must be key=value", s, item)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var p problems
		checkLabels("", map[string]string{k: v}, &p)
		if fes := FieldErrors(p.err()); len(fes) > 0 {
			return nil, fmt.Errorf("label selector %q: %w", s, fes[0].Err)
		}
		if prev, dup := sel[k]; dup && prev != v {
			return nil, fmt.Errorf("label selector %q: key %q given twice with different values", s, k)
		}
		sel[k] = v
	}
	return sel, nil
}

// FormatLabelSelector is the inverse of ParseLabelSelector, with keys sorted.
func FormatLabelSelector(sel map[string]string) string {
	var b strings.Builder
	for i, k := range sortedStringKeys(sel) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + sel[k])
	}
	return b.String()
}

// SelectNodes returns the nodes a plan targets (targets.selector and
// targets.datacenters), sorted by id. It does not change nodes. When none
// match it returns a *FieldError naming targets.selector.
func SelectNodes(spec *outpostv1.PlanSpec, nodes []*outpostv1.Node) ([]*outpostv1.Node, error) {
	t := spec.GetTargets()
	var out []*outpostv1.Node
	for _, n := range nodes {
		if !MatchSelector(t.GetSelector(), n.GetLabels()) {
			continue
		}
		if dcs := t.GetDatacenters(); len(dcs) > 0 && !slices.Contains(dcs, n.GetDatacenter()) {
			continue
		}
		if t.GetDrifted() && len(n.GetStatus().GetDrift()) == 0 {
			continue
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		what := "selector {" + FormatLabelSelector(t.GetSelector()) + "}"
		if dcs := t.GetDatacenters(); len(dcs) > 0 {
			what += " in datacenters " + strings.Join(dcs, ", ")
		}
		if t.GetDrifted() {
			return nil, &FieldError{Field: "targets.drifted", Err: fmt.Errorf("no node of %s drifted at its last verification (run outpost node verify)", what)}
		}
		return nil, &FieldError{Field: "targets.selector", Err: fmt.Errorf("%s matches none of the %d nodes in the inventory", what, len(nodes))}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out, nil
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

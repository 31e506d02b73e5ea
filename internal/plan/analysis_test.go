package plan

import (
	"strings"
	"testing"
)

// analysisPlan is base with one stage whose analysis is a.
func analysisPlan(a string) string {
	return base + "strategy:\n  stages:\n    - name: canary\n      analysis:\n" + a
}

const goodMeasurement = "        measurements:\n          - {name: errors, provider: prom, query: 'sum(up{node=~\"{{.NodesRegex}}\"})', success: 'result > 0.0'}\n"

func TestAnalysisValid(t *testing.T) {
	spec, err := Parse([]byte(analysisPlan("        count: 3\n" + goodMeasurement)))
	if err != nil {
		t.Fatal(err)
	}
	if got := AnalysisInterval(spec.GetStrategy().GetStages()[0].GetAnalysis()); got != DefaultAnalysisInterval {
		t.Errorf("interval = %v, want the default %v", got, DefaultAnalysisInterval)
	}
}

func TestAnalysisBad(t *testing.T) {
	const f = "strategy.stages[0].analysis"
	m := func(fields string) string {
		return "        count: 3\n        measurements:\n          - {" + fields + "}\n"
	}
	ok := "name: e, provider: prom, query: 'up'"
	for _, tc := range []struct{ name, analysis, want string }{
		{"no count", goodMeasurement, f + ".count: required"},
		{"count too high", "        count: 101\n" + goodMeasurement, f + ".count: 101: must be from 1 to 100"},
		{"interval too short", "        count: 1\n        interval: 10ms\n" + goodMeasurement, f + `.interval: "10ms": at least 1s`},
		{"negative limit", "        count: 1\n        failure_limit: -1\n" + goodMeasurement, f + ".failure_limit: -1: must not be negative"},
		{"on_failure", "        count: 1\n        on_failure: rollback\n" + goodMeasurement, f + `.on_failure: "rollback": must be "abort" or "pause"`},
		{"no measurements", "        count: 1\n", f + ".measurements: required"},
		{"no condition", m(ok), f + ".measurements[0]: set success, failure or both"},
		{"bad CEL", m(ok + ", success: 'result <'"), f + ".measurements[0].success: not a valid CEL expression"},
		{"CEL not bool", m(ok + ", failure: 'result * 2.0'"), f + ".measurements[0].failure: must be true or false"},
		{"baseline without query", m(ok + ", success: 'result <= 1.2 * baseline'"), "baseline needs a baseline_query"},
		{"bad template", m("name: e, provider: prom, query: '{{.Nodez}}', success: 'true'"), f + ".measurements[0].query: cannot render"},
		{"empty query", m("name: e, provider: prom, success: 'true'"), f + ".measurements[0].query: required"},
		{"no provider", m("name: e, query: up, success: 'true'"), f + ".measurements[0].provider: required"},
		{"provider is a URL", m("name: e, provider: 'http://evil:9090', query: up, success: 'true'"), f + ".measurements[0].provider: \"http://evil:9090\": must be"},
		{"duplicate name", "        count: 1\n        measurements:\n          - {" + ok + ", success: 'true'}\n          - {" + ok + ", success: 'true'}\n", `measurements[1].name: "e": used twice`},
		{"too many", "        count: 1\n        measurements:\n" + strings.Repeat("          - {"+ok+", success: 'true'}\n", 6), f + ".measurements: 6 entries: at most 5"},
		{"huge query", m("name: e, provider: prom, success: 'true', query: '" + strings.Repeat("x", 5000) + "'"), f + ".measurements[0].query: 5000 bytes: at most 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(analysisPlan(tc.analysis)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestCanaryPresetAnalysis(t *testing.T) {
	good := base + "strategy:\n  type: canary\n  analysis:\n        count: 2\n" + goodMeasurement
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("canary preset with analysis: %v", err)
	}
	rolling := base + "strategy:\n  type: rolling\n  analysis:\n        count: 2\n" + goodMeasurement
	if _, err := Parse([]byte(rolling)); err == nil || !strings.Contains(err.Error(), `strategy.analysis: only used by strategy type "canary"`) {
		t.Errorf("rolling with analysis: %v", err)
	}
	bad := base + "strategy:\n  type: canary\n  analysis:\n        count: 0\n" + goodMeasurement
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "strategy.analysis.count: required") {
		t.Errorf("canary preset with a bad analysis: %v", err)
	}
}

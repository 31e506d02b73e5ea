package analysis

import (
	"context"
	"math"
	"strings"
	"testing"
)

func TestRenderEscapesHostileValues(t *testing.T) {
	hostile := []string{`srv"} or vector(1) or {x="`, `a\`, "b\nc", `.*`}
	d := NewTemplateData(hostile, nil, []string{`base"x`}, `r"1`, "app", map[string]string{"zone": `z"} or up{`})
	tmpl, err := ParseQuery(`sum(up{node=~"{{.NodesRegex}}", release="{{.Release}}", zone="{{.Labels.zone}}"}) / sum(up{node=~"{{.BaselineRegex}}"}){{range .Nodes}} # {{.}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	q, err := Render(tmpl, d)
	if err != nil {
		t.Fatal(err)
	}
	// Every double quote a value brought in is escaped: the query's only
	// unescaped quotes are the template's own eight.
	unescaped := 0
	for i := range q {
		if q[i] == '"' && (i == 0 || q[i-1] != '\\') {
			unescaped++
		}
	}
	if unescaped != 8 {
		t.Errorf("query has %d unescaped quotes, want 8: %s", unescaped, q)
	}
	for _, want := range []string{`\"} or vector(1)`, `\\.\\*`, `b\nc`, `r\"1`, `z\"} or up{`} {
		if !strings.Contains(q, want) {
			t.Errorf("query %s lacks %s", q, want)
		}
	}
	if strings.Contains(q, "\n") {
		t.Errorf("query holds a raw newline: %q", q)
	}
}

func TestEmptyNodeListMatchesNothing(t *testing.T) {
	d := NewTemplateData([]string{"a"}, nil, nil, "r", "app", nil)
	if d.BaselineRegex != `[^\\s\\S]` {
		t.Errorf("BaselineRegex of no nodes = %q, want a regex that matches nothing", d.BaselineRegex)
	}
}

func TestParseQueryErrors(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"", "required"},
		{"   ", "required"},
		{"{{.Node}}", "can't evaluate field Node"},
		{"{{", "not a valid template"},
		{strings.Repeat("x", MaxQueryBytes+1), "at most"},
		{"{{range .Nodes}}{{end}}", "empty query"},
		{`{{define "a"}}{{template "a"}}{{template "a"}}{{end}}{{template "a"}}`, "define, block and template are not allowed"},
		{`x{{if true}}{{template "query"}}{{end}}`, "define, block and template are not allowed"},
		{`{{block "b" .}}x{{end}}`, "define, block and template are not allowed"},
	} {
		_, err := ParseQuery(tc.query)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseQuery(%.40q) = %v, want an error with %q", tc.query, err, tc.want)
		}
	}
}

func TestCompileConditionErrors(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		baseline bool
		want     string
	}{
		{"", false, "empty expression"},
		{"result <", false, "not a valid CEL expression"},
		{"result <= 1.2 * baseline", false, "baseline needs a baseline_query"},
		{"result + 1", false, "must be true or false"},
		{"'text'", false, "must be true or false"},
		{"nope > 1", false, "undeclared reference"},
		{strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40), false, "not a valid CEL expression"},
		{strings.Repeat("x", MaxConditionBytes+1), false, "at most"},
	} {
		_, err := CompileCondition(tc.expr, tc.baseline)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CompileCondition(%.40q) = %v, want an error with %q", tc.expr, err, tc.want)
		}
	}
	if _, err := CompileCondition("result <= 1.2 * baseline", true); err != nil {
		t.Errorf("baseline comparison: %v", err)
	}
}

func TestJudge(t *testing.T) {
	cond := func(s string, base bool) *Condition {
		t.Helper()
		if s == "" {
			return nil
		}
		c, err := CompileCondition(s, base)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	num := func(f ...float64) *Value { return &Value{Numbers: f} }
	for _, tc := range []struct {
		name             string
		success, failure string
		result           Value
		baseline         *Value
		want             Verdict
	}{
		{"success holds", "result < 0.05", "", *num(0.01), nil, Success},
		{"success does not hold", "result < 0.05", "", *num(0.5), nil, Failure},
		{"failure holds", "", "result > 0.1", *num(0.5), nil, Failure},
		{"failure alone does not hold", "", "result > 0.1", *num(0.01), nil, Success},
		{"failure wins over success", "result < 1.0", "result > 0.1", *num(0.5), nil, Failure},
		{"baseline pass", "result <= 1.2 * baseline", "", *num(0.011), num(0.01), Success},
		{"baseline fail", "result <= 1.2 * baseline", "", *num(0.4), num(0.01), Failure},
		{"empty result", "result < 0.05", "", Value{}, nil, Inconclusive},
		{"NaN", "result < 0.05", "", *num(math.NaN()), nil, Inconclusive},
		{"NaN passes a negated test otherwise", "!(result > 0.05)", "", *num(math.NaN()), nil, Inconclusive},
		{"Inf", "result < 0.05", "", *num(math.Inf(1)), nil, Inconclusive},
		{"empty baseline", "result <= 1.2 * baseline", "", *num(0.01), &Value{}, Inconclusive},
		{"NaN baseline (0/0)", "result <= 1.2 * baseline", "", *num(0.01), num(math.NaN()), Inconclusive},
		{"vector", "result.all(x, x < 0.05)", "", *num(0.01, 0.02), nil, Success},
		{"vector fails", "result.all(x, x < 0.05)", "", *num(0.01, 0.2), nil, Failure},
		{"type error is inconclusive", "result < 0.05", "", *num(0.01, 0.02), nil, Inconclusive},
		{"runaway cost is inconclusive", "result.all(x, result.all(y, result.all(z, x+y+z > -1.0)))", "", *num(make([]float64, 200)...), nil, Inconclusive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.baseline != nil
			got, why := Judge(context.Background(), cond(tc.success, base), cond(tc.failure, base), tc.result, tc.baseline)
			if got != tc.want {
				t.Errorf("Judge = %v (%s), want %v", got, why, tc.want)
			}
			if why == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestValueString(t *testing.T) {
	if got := (Value{Numbers: []float64{0.5}}).String(); got != "0.5" {
		t.Errorf("one = %q", got)
	}
	long := Value{Numbers: make([]float64, 20)}
	if got := long.String(); !strings.Contains(got, "… 12 more") {
		t.Errorf("twenty = %q", got)
	}
}

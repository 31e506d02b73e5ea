package plan

import (
	"time"

	"github.com/outposthq/outpost/internal/analysis"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Bounds and defaults of a stage's analysis. A stage records every
// measurement with its rollout, so count times measurements stays small.
const (
	// MaxMeasurements bounds analysis.measurements.
	MaxMeasurements = 5
	// MaxAnalysisCount bounds analysis.count.
	MaxAnalysisCount = 100
	// DefaultAnalysisInterval applies when analysis.interval is empty.
	DefaultAnalysisInterval = time.Minute
	// MinAnalysisInterval keeps a plan from hammering its provider.
	MinAnalysisInterval = time.Second

	OnFailureAbort = "abort"
	OnFailurePause = "pause"
)

// AnalysisInterval returns a valid analysis's interval, defaults applied.
func AnalysisInterval(a *outpostv1.PlanAnalysis) time.Duration {
	if s := a.GetInterval(); s != "" {
		if d, err := ParseDuration("", s); err == nil {
			return d
		}
	}
	return DefaultAnalysisInterval
}

// Conditions are the compiled conditions of one measurement.
type Conditions struct {
	Success, Failure *analysis.Condition
}

// CompileConditions compiles a measurement's success and failure
// conditions; either may come back nil (not set).
func CompileConditions(m *outpostv1.PlanMeasurement) (Conditions, error) {
	var c Conditions
	var err error
	base := m.GetBaselineQuery() != ""
	if s := m.GetSuccess(); s != "" {
		if c.Success, err = analysis.CompileCondition(s, base); err != nil {
			return c, &FieldError{Field: "success", Err: err}
		}
	}
	if s := m.GetFailure(); s != "" {
		if c.Failure, err = analysis.CompileCondition(s, base); err != nil {
			return c, &FieldError{Field: "failure", Err: err}
		}
	}
	return c, nil
}

// validateAnalysis checks a stage's analysis: its numbers, its
// templates (parsed and rendered once) and its CEL conditions (compiled),
// so a plan with a bad one is refused before anything is created. Which
// providers exist only the control plane knows; it checks the names.
func validateAnalysis(f string, a *outpostv1.PlanAnalysis, p *problems) {
	if a == nil {
		return
	}
	if s := a.GetInterval(); s != "" {
		if d, err := ParseDuration(join(f, "interval"), s); err != nil {
			p.addErr(err)
		} else if d < MinAnalysisInterval {
			p.add(join(f, "interval"), "%q: at least %s", s, MinAnalysisInterval)
		}
	}
	if c := a.GetCount(); c < 1 || c > MaxAnalysisCount {
		if c == 0 {
			p.add(join(f, "count"), "required: how many measurement rounds to take (1 to %d)", MaxAnalysisCount)
		} else {
			p.add(join(f, "count"), "%d: must be from 1 to %d", c, MaxAnalysisCount)
		}
	}
	if n := a.GetFailureLimit(); n < 0 {
		p.add(join(f, "failure_limit"), "%d: must not be negative", n)
	}
	if n := a.GetInconclusiveLimit(); n < 0 {
		p.add(join(f, "inconclusive_limit"), "%d: must not be negative", n)
	}
	switch o := a.GetOnFailure(); o {
	case "", OnFailureAbort, OnFailurePause:
	default:
		p.add(join(f, "on_failure"), "%q: must be %q or %q", o, OnFailureAbort, OnFailurePause)
	}
	if len(a.GetMeasurements()) == 0 {
		p.add(join(f, "measurements"), "required: at least one measurement")
	}
	names := map[string]int{}
	for i, m := range a.GetMeasurements() {
		mf := index(join(f, "measurements"), i)
		if err := checkName(join(mf, "name"), m.GetName()); err != nil {
			p.addErr(err)
		} else if j, dup := names[m.GetName()]; dup {
			p.add(join(mf, "name"), "%q: used twice (also measurements[%d])", m.GetName(), j)
		} else {
			names[m.GetName()] = i
		}
		if err := checkName(join(mf, "provider"), m.GetProvider()); err != nil {
			p.addErr(err)
		}
		if _, err := analysis.ParseQuery(m.GetQuery()); err != nil {
			p.add(join(mf, "query"), "%v", err)
		}
		if q := m.GetBaselineQuery(); q != "" {
			if _, err := analysis.ParseQuery(q); err != nil {
				p.add(join(mf, "baseline_query"), "%v", err)
			}
		}
		if m.GetSuccess() == "" && m.GetFailure() == "" {
			p.add(mf, "set success, failure or both: a CEL expression over result, e.g. success: \"result < 0.01\"")
		}
		if _, err := CompileConditions(m); err != nil {
			fe := err.(*FieldError)
			p.add(join(mf, fe.Field), "%v", fe.Err)
		}
	}
}

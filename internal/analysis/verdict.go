package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// Bounds of a condition.
const (
	// MaxConditionBytes bounds a CEL expression in a plan.
	MaxConditionBytes = 1024
	// costLimit bounds one evaluation (CEL's cost units: about one per
	// operation and list element); a condition over a vector of a few
	// thousand samples fits, a runaway comprehension does not.
	costLimit = 100_000
	// evalTimeout bounds one evaluation's wall time as well.
	evalTimeout = time.Second
	// maxShown bounds the samples a value's text shows.
	maxShown = 8
)

// Value is a query's value: one number (a scalar, or a vector of one
// sample) or a vector's samples. A condition sees one number as a double
// and several as a list of doubles.
type Value struct {
	Numbers []float64
}

// String returns the value for people: "0.031" or "[0.01, 0.02]",
// at most maxShown samples.
func (v Value) String() string {
	if len(v.Numbers) == 1 {
		return formatNumber(v.Numbers[0])
	}
	parts := make([]string, 0, min(len(v.Numbers), maxShown)+1)
	for i, n := range v.Numbers {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("… %d more", len(v.Numbers)-maxShown))
			break
		}
		parts = append(parts, formatNumber(n))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// usable says why a value proves nothing, or "" when it can be judged.
func (v Value) usable(what string) string {
	if len(v.Numbers) == 0 {
		return what + " returned no samples"
	}
	for _, n := range v.Numbers {
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return fmt.Sprintf("%s is %s", what, v)
		}
	}
	return ""
}

func (v Value) cel() any {
	if len(v.Numbers) == 1 {
		return v.Numbers[0]
	}
	return v.Numbers
}

// Condition is a compiled CEL condition.
type Condition struct {
	src string
	prg cel.Program
}

// String returns the expression as written.
func (c *Condition) String() string { return c.src }

// CompileCondition compiles a CEL expression over result (and, when
// withBaseline, baseline) that must yield a bool. Referencing baseline
// without a baseline query is an error here.
func CompileCondition(expr string, withBaseline bool) (*Condition, error) {
	switch {
	case strings.TrimSpace(expr) == "":
		return nil, errors.New("empty expression")
	case len(expr) > MaxConditionBytes:
		return nil, fmt.Errorf("%d bytes: at most %d", len(expr), MaxConditionBytes)
	}
	opts := []cel.EnvOption{
		cel.Variable("result", cel.DynType),
		cel.ParserExpressionSizeLimit(MaxConditionBytes),
		cel.ParserRecursionLimit(32),
	}
	if withBaseline {
		opts = append(opts, cel.Variable("baseline", cel.DynType))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		msg := iss.Err().Error()
		if !withBaseline && strings.Contains(msg, "'baseline'") {
			msg += " (baseline needs a baseline_query)"
		}
		return nil, fmt.Errorf("not a valid CEL expression: %s", msg)
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("must be true or false, not a %s (write a comparison, e.g. result < 0.05)", t)
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, err
	}
	return &Condition{src: expr, prg: prg}, nil
}

// eval evaluates the condition to a bool.
func (c *Condition) eval(ctx context.Context, vars map[string]any) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, evalTimeout)
	defer cancel()
	out, _, err := c.prg.ContextEval(ctx, vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("yields %s, not true or false", out.Type().TypeName())
	}
	return bool(b), nil
}

// Verdict is what a measurement found.
type Verdict int

// Verdicts.
const (
	Inconclusive Verdict = iota
	Success
	Failure
)

func (v Verdict) String() string {
	switch v {
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "inconclusive"
}

// Judge decides a measurement: failure when the failure condition holds
// (or the success condition does not), success when the success
// condition holds (or the failure condition, alone, does not), and
// inconclusive when the value proves nothing (no samples, NaN, ±Inf) or a
// condition cannot be evaluated. baseline is nil when there is no baseline
// query; success or failure may be nil, not both. why says what decided.
func Judge(ctx context.Context, success, failure *Condition, result Value, baseline *Value) (v Verdict, why string) {
	if why := result.usable("the query"); why != "" {
		return Inconclusive, why
	}
	vars := map[string]any{"result": result.cel()}
	if baseline != nil {
		if why := baseline.usable("the baseline query"); why != "" {
			return Inconclusive, why
		}
		vars["baseline"] = baseline.cel()
	}
	if failure != nil {
		bad, err := failure.eval(ctx, vars)
		if err != nil {
			return Inconclusive, fmt.Sprintf("failure condition %q: %v", failure, err)
		}
		if bad {
			return Failure, fmt.Sprintf("failure condition %q holds", failure)
		}
	}
	if success == nil {
		return Success, fmt.Sprintf("failure condition %q does not hold", failure)
	}
	ok, err := success.eval(ctx, vars)
	if err != nil {
		return Inconclusive, fmt.Sprintf("success condition %q: %v", success, err)
	}
	if !ok {
		return Failure, fmt.Sprintf("success condition %q does not hold", success)
	}
	return Success, fmt.Sprintf("success condition %q holds", success)
}

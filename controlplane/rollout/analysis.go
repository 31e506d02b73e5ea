package rollout

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	ianalysis "github.com/outposthq/outpost/internal/analysis"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Canary analysis: a stage whose plan has analysis bakes until it has
// taken analysis.count measurement rounds (and its bake time, if any, has
// passed). Every analysis.interval a round runs each measurement: its
// query (and baseline query) rendered for the stage's nodes and sent to
// the named provider through Config.Analysis, off the loop, then judged
// by its CEL conditions. A round's measurements are recorded with the
// stage in etcd, so a new leader resumes from them: it counts the rounds
// taken and starts the next one an interval after the last.
//
// Verdicts act per measurement name, counting those after the last one
// that acted: more failures than failure_limit roll the stage's nodes
// back and abort the rollout (on_failure: abort) or pause it (pause);
// more inconclusive ones than inconclusive_limit pause it for a person.
// dry_run measurements are recorded and never act. A provider that
// cannot be reached, a query error, an empty result or NaN is
// inconclusive: never a pass.

// Querier runs a rendered query against a named provider; the control
// plane's analysis.Providers implements it. Query must return when ctx ends.
type Querier interface {
	Query(ctx context.Context, provider, query string) (ianalysis.Value, error)
}

// analysisRun is the analysis of a run's current stage in this term.
type analysisRun struct {
	// round is the round out now; nil between rounds.
	round *analysisRound
	// next is when the next round starts; zero: not yet decided (from the
	// recorded measurements, at the next tick).
	next time.Time
}

// analysisRound is one round of measurements out at the providers.
type analysisRound struct {
	stage   int
	index   int32
	started time.Time
	// results[i] is measurement i's record, nil until it came back;
	// queries[i] its rendered query (for the reason of a failure).
	results []*outpostv1.Measurement
	queries []string
	pending int
}

// measureTimeout bounds a measurement beyond the providers' own timeouts.
const measureTimeout = 5 * time.Minute

// analysisTick starts the analysis rounds that are due. ctx is the
// engine's: the measurements end with it.
func (e *Engine) analysisTick(ctx context.Context, now time.Time) {
	for _, r := range e.runs {
		st := r.stage()
		if st.GetAnalysis() == nil || st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING ||
			r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || r.aborting() {
			continue
		}
		if r.ana.round != nil {
			continue
		}
		taken := roundsTaken(st)
		if taken >= st.GetAnalysis().GetCount() {
			continue
		}
		interval := plan.AnalysisInterval(st.GetAnalysis())
		if r.ana.next.IsZero() {
			r.ana.next = now.Add(interval)
			if ms := st.GetMeasurements(); len(ms) > 0 {
				r.ana.next = ms[len(ms)-1].GetTime().AsTime().Add(interval)
			}
		}
		if now.Before(r.ana.next) {
			continue
		}
		e.startAnalysisRound(ctx, r, taken, now)
	}
}

// roundsTaken counts the rounds recorded for the stage.
func roundsTaken(st *outpostv1.Stage) int32 {
	ms := st.GetMeasurements()
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].GetRound() + 1
}

// analysisDone reports whether the stage's analysis, if any, took all
// its rounds.
func analysisDone(st *outpostv1.Stage) bool {
	a := st.GetAnalysis()
	return a == nil || roundsTaken(st) >= a.GetCount()
}

// templateData is what the current stage's queries see.
func (r *run) templateData() ianalysis.TemplateData {
	cur := int(r.r.GetCurrentStage())
	var nodes, addrs, baseline []string
	var common map[string]string
	for _, n := range r.stageNodes[cur] {
		nodes = append(nodes, n.id())
		if n.node != nil {
			addrs = append(addrs, n.node.GetAddress())
			if common == nil {
				common = maps.Clone(n.node.GetLabels())
			} else {
				maps.DeleteFunc(common, func(k, v string) bool { return n.node.GetLabels()[k] != v })
			}
		}
	}
	for i := cur + 1; i < len(r.stageNodes); i++ {
		for _, n := range r.stageNodes[i] {
			if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
				baseline = append(baseline, n.id())
			}
		}
	}
	sort.Strings(baseline)
	return ianalysis.NewTemplateData(nodes, addrs, baseline, r.r.GetReleaseId(), r.r.GetApp(), common)
}

// measurementJob is what a measurement's goroutine needs, prepared on the
// loop so the goroutine touches no engine state.
type measurementJob struct {
	m                *outpostv1.PlanMeasurement
	query, baseline  string
	success, failure *ianalysis.Condition
	prepErr          string // why the measurement cannot run: inconclusive
}

// startAnalysisRound renders every measurement of the current stage and
// sends them off the loop; their results come back through e.reqs.
func (e *Engine) startAnalysisRound(ctx context.Context, r *run, index int32, now time.Time) {
	st := r.stage()
	ms := st.GetAnalysis().GetMeasurements()
	rd := &analysisRound{stage: int(r.r.GetCurrentStage()), index: index, started: now,
		results: make([]*outpostv1.Measurement, len(ms)), queries: make([]string, len(ms)), pending: len(ms)}
	r.ana.round = rd
	data := r.templateData()
	for i, m := range ms {
		job := prepareMeasurement(m, data)
		rd.queries[i] = job.query
		if job.prepErr != "" || e.cfg.Analysis == nil {
			why := job.prepErr
			if why == "" {
				why = "no analysis providers are configured on this control plane"
			}
			e.onMeasurement(r, rd, i, ianalysis.Inconclusive, "", "", why)
			continue
		}
		if !e.goMeasure(ctx, r, rd, i, job) {
			return // stopping
		}
	}
}

// prepareMeasurement renders a measurement's queries and compiles its
// conditions (validated with the plan; a failure here is inconclusive).
func prepareMeasurement(m *outpostv1.PlanMeasurement, data ianalysis.TemplateData) measurementJob {
	job := measurementJob{m: m}
	render := func(text string) (string, error) {
		t, err := ianalysis.ParseQuery(text)
		if err != nil {
			return "", err
		}
		return ianalysis.Render(t, data)
	}
	var err error
	if job.query, err = render(m.GetQuery()); err != nil {
		job.prepErr = "query: " + err.Error()
		return job
	}
	if m.GetBaselineQuery() != "" {
		if job.baseline, err = render(m.GetBaselineQuery()); err != nil {
			job.prepErr = "baseline_query: " + err.Error()
			return job
		}
	}
	c, err := plan.CompileConditions(m)
	if err != nil {
		job.prepErr = err.Error()
		return job
	}
	job.success, job.failure = c.Success, c.Failure
	return job
}

// goMeasure runs one measurement on a goroutine the engine waits for. It
// reports false when the engine is stopping.
func (e *Engine) goMeasure(ctx context.Context, r *run, rd *analysisRound, i int, job measurementJob) bool {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return false
	}
	e.handlers.Add(1)
	e.mu.Unlock()
	q := e.cfg.Analysis
	go func() {
		defer e.handlers.Done()
		mctx, cancel := context.WithTimeout(ctx, measureTimeout)
		defer cancel()
		verdict, value, base, why := measure(mctx, q, job)
		select {
		case e.reqs <- func(context.Context) { e.onMeasurement(r, rd, i, verdict, value, base, why) }:
		case <-e.stopping:
		case <-ctx.Done():
		}
	}()
	return true
}

// measure queries and judges one measurement.
func measure(ctx context.Context, q Querier, job measurementJob) (v ianalysis.Verdict, value, base, why string) {
	res, err := q.Query(ctx, job.m.GetProvider(), job.query)
	if err != nil {
		return ianalysis.Inconclusive, "", "", "query: " + err.Error()
	}
	value = res.String()
	var bp *ianalysis.Value
	if job.baseline != "" {
		b, err := q.Query(ctx, job.m.GetProvider(), job.baseline)
		if err != nil {
			return ianalysis.Inconclusive, value, "", "baseline query: " + err.Error()
		}
		base, bp = b.String(), &b
	}
	v, why = ianalysis.Judge(ctx, job.success, job.failure, res, bp)
	return v, value, base, why
}

var verdicts = map[ianalysis.Verdict]outpostv1.MeasurementVerdict{
	ianalysis.Success:      outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS,
	ianalysis.Failure:      outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE,
	ianalysis.Inconclusive: outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_INCONCLUSIVE,
}

// onMeasurement applies one measurement's result; the last of a round
// records the round and judges the analysis.
func (e *Engine) onMeasurement(r *run, rd *analysisRound, i int, v ianalysis.Verdict, value, base, why string) {
	if r.ana.round != rd {
		return // a round given up on (pause, abort, promote, new stage)
	}
	m := r.r.GetStages()[rd.stage].GetAnalysis().GetMeasurements()[i]
	rd.results[i] = &outpostv1.Measurement{
		Name: m.GetName(), Round: rd.index, Time: timestamppb.New(e.cfg.Clock.Now()),
		Verdict: verdicts[v], Value: clipText(value, 512), Baseline: clipText(base, 512),
		Message: clipText(why, 1024), DryRun: m.GetDryRun(),
	}
	rd.pending--
	if rd.pending > 0 {
		return
	}
	r.ana.round = nil
	r.ana.next = rd.started.Add(plan.AnalysisInterval(r.r.GetStages()[rd.stage].GetAnalysis()))
	st := r.stage()
	if int(r.r.GetCurrentStage()) != rd.stage || st.GetState() != outpostv1.StageState_STAGE_STATE_BAKING ||
		r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || r.aborting() {
		return
	}
	st.Measurements = append(st.Measurements, rd.results...)
	for _, res := range rd.results {
		e.log.Info("analysis measurement", "rollout", r.id(), "stage", st.GetName(), "measurement", res.GetName(),
			"round", res.GetRound(), "verdict", verdictName(res.GetVerdict()), "value", res.GetValue(),
			"baseline", res.GetBaseline(), "dry_run", res.GetDryRun(), "why", res.GetMessage())
		// An event on the stage's span of this leadership term.
		if r.stageSpan != nil {
			r.stageSpan.AddEvent("analysis measurement", trace.WithAttributes(
				telemetry.AttrStage.String(st.GetName()),
				attribute.String("outpost.measurement", res.GetName()),
				attribute.Int("outpost.round", int(res.GetRound())),
				attribute.String("outpost.verdict", verdictName(res.GetVerdict())),
				attribute.String("outpost.value", res.GetValue()),
				attribute.String("outpost.baseline", res.GetBaseline()),
				attribute.Bool("outpost.dry_run", res.GetDryRun()),
			))
		}
	}
	e.markRun(r)
	e.judgeAnalysis(r, st, rd)
}

// VerdictName is a verdict for people ("success").
func verdictName(v outpostv1.MeasurementVerdict) string {
	switch v {
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS:
		return "success"
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE:
		return "failure"
	}
	return "inconclusive"
}

// judgeAnalysis acts on the stage's recorded measurements after round rd.
func (e *Engine) judgeAnalysis(r *run, st *outpostv1.Stage, rd *analysisRound) {
	a := st.GetAnalysis()
	var inconclusive *outpostv1.Measurement
	var unknownCount int32
	for i, pm := range a.GetMeasurements() {
		if pm.GetDryRun() {
			continue
		}
		fails, unknown := tally(st.GetMeasurements(), pm.GetName())
		last := rd.results[i]
		if fails > a.GetFailureLimit() && last.GetVerdict() == outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE {
			last.Acted = true
			why := fmt.Sprintf("analysis of stage %s failed: measurement %s: query %s = %s%s: %s (%d failure(s), failure_limit %d)",
				st.GetName(), pm.GetName(), clipText(rd.queries[i], 300), last.GetValue(), baselineText(last), last.GetMessage(), fails, a.GetFailureLimit())
			e.notifyAnalysis(r, st, "failed", why)
			if a.GetOnFailure() == plan.OnFailurePause {
				e.pauseForAnalysis(r, why)
				return
			}
			e.analysisFailed(r, why)
			return
		}
		if unknown > a.GetInconclusiveLimit() && last.GetVerdict() == outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_INCONCLUSIVE && inconclusive == nil {
			inconclusive, unknownCount = last, unknown
		}
	}
	if m := inconclusive; m != nil {
		m.Acted = true
		why := fmt.Sprintf("analysis of stage %s is inconclusive: measurement %s: %s (%d inconclusive, inconclusive_limit %d); "+
			"check the provider, then resume to measure again (once resumed, promote skips the rest of the analysis)",
			st.GetName(), m.GetName(), m.GetMessage(), unknownCount, a.GetInconclusiveLimit())
		e.notifyAnalysis(r, st, "inconclusive", why)
		e.pauseForAnalysis(r, why)
		return
	}
	if analysisDone(st) {
		e.notifyAnalysis(r, st, "passed", fmt.Sprintf("%d round(s) of %d measurement(s)", roundsTaken(st), len(a.GetMeasurements())))
	}
}

// tally counts the failures and inconclusive verdicts of a measurement
// name after the last of its verdicts that acted.
func tally(ms []*outpostv1.Measurement, name string) (fails, unknown int32) {
	for _, m := range ms {
		if m.GetName() != name {
			continue
		}
		if m.GetActed() {
			fails, unknown = 0, 0
			continue
		}
		switch m.GetVerdict() {
		case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE:
			fails++
		case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_INCONCLUSIVE:
			unknown++
		}
	}
	return fails, unknown
}

func baselineText(m *outpostv1.Measurement) string {
	if m.GetBaseline() == "" {
		return ""
	}
	return " (baseline " + m.GetBaseline() + ")"
}

// notifyAnalysis hands an analysis outcome to Config.OnAnalysis (the
// audit log) once the rollout record is durable.
func (e *Engine) notifyAnalysis(r *run, st *outpostv1.Stage, outcome, why string) {
	if e.cfg.OnAnalysis == nil {
		return
	}
	rc := proto.CloneOf(r.r)
	ms := make([]*outpostv1.Measurement, len(st.GetMeasurements()))
	for i, m := range st.GetMeasurements() {
		ms[i] = proto.CloneOf(m)
	}
	name := st.GetName()
	e.afterCommit = append(e.afterCommit, func(err error) {
		if err == nil {
			e.cfg.OnAnalysis(context.Background(), rc, name, outcome, why, ms)
		}
	})
}

// pauseForAnalysis pauses the rollout for a person; the stage keeps
// baking and the analysis continues on resume.
func (e *Engine) pauseForAnalysis(r *run, why string) {
	r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
	r.setMessageOf(outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_PAUSED, "paused: "+why)
	r.waitMsg, r.queueMsg = "", ""
	e.dropChecks(r)
	r.ana = analysisRun{}
	e.markRun(r)
	e.log.Warn("rollout paused by its analysis", "rollout", r.id(), "reason", why)
}

// analysisFailed fails the baking stage, queues the rollback of its nodes
// and aborts the rollout.
func (e *Engine) analysisFailed(r *run, why string) {
	now := e.cfg.Clock.Now()
	cur := int(r.r.GetCurrentStage())
	st := r.r.GetStages()[cur]
	n := e.queueRollbacks(r, r.stageNodes[cur], why)
	st.State = outpostv1.StageState_STAGE_STATE_FAILED
	st.EndTime = timestamppb.New(now)
	st.BakeEndTime = nil
	r.ana = analysisRun{}
	e.log.Warn("analysis failed; rolling back the stage", "rollout", r.id(), "stage", st.GetName(), "reason", why, "rolling_back", n)
	e.abort(r, fmt.Sprintf("%s; rolling back the stage's %d node(s)", why, n))
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

package rollout

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Span names.
const (
	SpanRollout    = "outpost.rollout"     // root of the rollout's trace, made by CreateRollout
	SpanStage      = "outpost.stage"       // a stage, in one leadership term
	SpanBatch      = "outpost.batch"       // a batch, in one leadership term
	SpanRolloutEnd = "outpost.rollout.end" // the rollout's final state
	SpanNode       = "outpost.node_deployment"
)

// Traces (see docs/ARCHITECTURE.md, "Traces"):
//
//   - The rollout's trace: a short root span made when the rollout is
//     created, whose trace id is stored in the rollout and whose span id is
//     derived from the rollout's id (RootSpanID), so it is exported at once
//     and every later leader can hang its stage and batch spans under it.
//     Stage and batch spans live for one leadership term at most: a leader
//     ends its open ones when it steps down, the next starts new ones
//     (outpost.resumed).
//   - One trace per node deployment (per node per rollout): its trace id is
//     stored in the node's record; each assignment of the node (a first
//     try, a re-queued one, a rollback, a new leader's resumed watch) is a
//     root span in it, linked to the batch span, which links back; the
//     gateway's spans are its children through Assignment.trace_context.

// NewTraceID returns a random trace id, hex encoded, for a new rollout.
func NewTraceID() string {
	var id trace.TraceID
	_, _ = rand.Read(id[:])
	return id.String()
}

// RootSpanID is the span id of the root span of rollout id's trace.
func RootSpanID(id string) trace.SpanID {
	sum := sha256.Sum256([]byte("outpost rollout " + id))
	var sid trace.SpanID
	copy(sid[:], sum[:8])
	if !sid.IsValid() {
		sid[7] = 1
	}
	return sid
}

// StartRootSpan starts the root span of the trace of rollout id, with
// trace id traceID (hex) and span id RootSpanID(id), linked to the span
// of ctx (the API call that created it). It reports whether the span has
// exactly those ids: only then do later spans of the rollout have an
// exported parent, and only then should the rollout keep the trace id.
func StartRootSpan(ctx context.Context, tracer trace.Tracer, id, traceID string) (trace.Span, bool) {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return trace.SpanFromContext(context.Background()), false
	}
	rootCtx := telemetry.WithRootIDs(context.Background(), tid, RootSpanID(id))
	_, span := tracer.Start(rootCtx, SpanRollout, trace.WithNewRoot(),
		trace.WithLinks(trace.LinkFromContext(ctx)),
		trace.WithAttributes(telemetry.AttrRolloutID.String(id)))
	sc := span.SpanContext()
	return span, span.IsRecording() && sc.TraceID() == tid && sc.SpanID() == RootSpanID(id)
}

// ParentContext returns ctx carrying the root span of rollout id's trace
// (trace id traceID) as its remote parent, or ctx unchanged when the
// rollout has no trace id.
func ParentContext(ctx context.Context, id, traceID string) context.Context {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil || !tid.IsValid() {
		return ctx
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     RootSpanID(id),
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// startSpans starts this term's spans of a running rollout: its stage's
// and, when a batch is running, its batch's.
func (e *Engine) startSpans(r *run, resumed bool) {
	r.resumed = resumed
	st := r.stage()
	if st == nil {
		return
	}
	switch st.GetState() {
	case outpostv1.StageState_STAGE_STATE_RUNNING, outpostv1.StageState_STAGE_STATE_BAKING:
		e.startStageSpan(r)
		if st.GetState() == outpostv1.StageState_STAGE_STATE_RUNNING && st.GetCurrentBatch() >= 0 {
			e.startBatchSpan(r)
		}
	}
}

// startStageSpan starts the span of the current stage, ending the last.
func (e *Engine) startStageSpan(r *run) {
	r.endStageSpan("")
	if r.r.GetTraceId() == "" {
		return
	}
	st := r.stage()
	r.stageCtx, r.stageSpan = e.tracer.Start(ParentContext(context.Background(), r.id(), r.r.GetTraceId()), SpanStage,
		trace.WithAttributes(
			telemetry.AttrRolloutID.String(r.id()), telemetry.AttrApp.String(r.r.GetApp()),
			telemetry.AttrReleaseID.String(r.r.GetReleaseId()), telemetry.AttrStage.String(st.GetName()),
			telemetry.AttrResumed.Bool(r.resumed),
		))
}

// endStageSpan ends the stage's span (and its batch's); a non-empty
// errMsg marks it failed.
func (r *run) endStageSpan(errMsg string) {
	r.endBatchSpan()
	if r.stageSpan == nil {
		return
	}
	if errMsg != "" {
		fail(r.stageSpan, errMsg)
	}
	r.stageSpan.End()
	r.stageSpan, r.stageCtx = nil, nil
}

func (e *Engine) startBatchSpan(r *run) {
	r.endBatchSpan()
	if r.stageSpan == nil {
		e.startStageSpan(r)
	}
	if r.stageCtx == nil {
		return
	}
	cur := int(r.r.GetCurrentStage())
	st := r.r.GetStages()[cur]
	b := int(st.GetCurrentBatch())
	r.batchCtx, r.batchSpan = e.tracer.Start(r.stageCtx, SpanBatch, trace.WithAttributes(
		telemetry.AttrRolloutID.String(r.id()), telemetry.AttrStage.String(st.GetName()), telemetry.AttrBatch.Int(b),
		telemetry.AttrBatchSize.Int(len(r.batches[cur][b])), telemetry.AttrResumed.Bool(r.resumed),
	))
}

func (r *run) endBatchSpan() {
	if r.batchSpan != nil {
		r.batchSpan.End()
		r.batchSpan, r.batchCtx = nil, nil
	}
}

// startNodeSpan starts a root span of n's deployment trace for one
// assignment (or a new leader's watch of a running one), links it and the
// batch span to each other, and records the trace id in n's record.
func (e *Engine) startNodeSpan(r *run, n *nodeRun, resumed bool) trace.Span {
	ctx := context.Background()
	if tid, err := trace.TraceIDFromHex(n.rn.GetTraceId()); err == nil {
		ctx = telemetry.WithRootIDs(ctx, tid, trace.SpanID{})
	}
	from := r.batchCtx
	if from == nil {
		from = r.stageCtx
	}
	if from == nil {
		from = ParentContext(context.Background(), r.id(), r.r.GetTraceId())
	}
	_, sp := e.tracer.Start(ctx, SpanNode, trace.WithNewRoot(),
		trace.WithLinks(trace.LinkFromContext(from)),
		trace.WithAttributes(
			telemetry.AttrRolloutID.String(r.id()), telemetry.AttrNodeID.String(n.id()),
			telemetry.AttrApp.String(r.r.GetApp()), telemetry.AttrReleaseID.String(r.r.GetReleaseId()),
			telemetry.AttrDatacenter.String(n.rn.GetDatacenter()), telemetry.AttrStage.String(n.rn.GetStage()),
			telemetry.AttrBatch.Int(n.batch), telemetry.AttrKind.String(telemetry.KindValue(n.kind())),
			telemetry.AttrResumed.Bool(resumed),
		))
	sc := sp.SpanContext()
	if !sc.IsValid() {
		return sp
	}
	if tid := sc.TraceID().String(); tid != n.rn.GetTraceId() {
		n.rn.TraceId = tid
		e.markNode(n)
	}
	if bs := trace.SpanFromContext(from); bs.IsRecording() {
		bs.AddLink(trace.Link{SpanContext: sc})
	}
	return sp
}

// traceContext is the W3C trace context of span, for Assignment.trace_context.
func traceContext(span trace.Span) map[string]string {
	if span == nil || !span.SpanContext().IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), carrier)
	return carrier
}

// endNodeSpan ends a node's span with its outcome.
func endNodeSpan(n *nodeRun, errMsg string) {
	if n.span == nil {
		return
	}
	n.span.SetAttributes(telemetry.AttrNodeState.String(telemetry.NodeStateValue(n.rn.GetState())))
	if n.rn.GetStep() != outpostv1.Step_STEP_UNSPECIFIED {
		n.span.SetAttributes(telemetry.AttrStep.String(telemetry.StepValue(n.rn.GetStep())))
	}
	if errMsg != "" {
		fail(n.span, errMsg)
	}
	n.span.End()
	n.span = nil
}

// fail marks span failed with msg: its status and an exception event.
func fail(span trace.Span, msg string) {
	span.RecordError(errors.New(msg))
	span.SetStatus(codes.Error, msg)
}

// endSpans ends the term's spans of a rollout that did not finish.
func (r *run) endSpans(why string) {
	for _, n := range r.order {
		if n.span != nil {
			n.span.SetAttributes(telemetry.AttrInterrupted.String(why))
			n.span.End()
			n.span = nil
		}
	}
	for _, sp := range []trace.Span{r.batchSpan, r.stageSpan} {
		if sp != nil {
			sp.SetAttributes(telemetry.AttrInterrupted.String(why))
		}
	}
	r.endStageSpan("")
}

// endSpansStatus ends the spans of a finished rollout and records its
// final state in a short span under the rollout's root; a non-empty
// errMsg marks both the stage and that span failed.
func (e *Engine) endSpansStatus(r *run, errMsg string, state outpostv1.RolloutState) {
	r.endStageSpan(errMsg)
	if r.r.GetTraceId() == "" {
		return
	}
	_, sp := e.tracer.Start(ParentContext(context.Background(), r.id(), r.r.GetTraceId()), SpanRolloutEnd,
		trace.WithAttributes(telemetry.AttrRolloutID.String(r.id()),
			telemetry.AttrRolloutState.String(telemetry.RolloutStateValue(state))))
	if errMsg != "" {
		fail(sp, errMsg)
	}
	sp.End()
}

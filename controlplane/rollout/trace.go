package rollout

import (
	"context"
	"crypto/rand"
	"crypto/sha256"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Span attribute keys.
var (
	attrRollout     = attribute.Key("outpost.rollout.id")
	attrApp         = attribute.Key("outpost.app")
	attrRevision    = attribute.Key("outpost.revision")
	attrResumed     = attribute.Key("outpost.resumed")
	attrStage       = attribute.Key("outpost.stage")
	attrBatch       = attribute.Key("outpost.batch")
	attrBatchSize   = attribute.Key("outpost.batch.size")
	attrNode        = attribute.Key("outpost.node.id")
	attrDatacenter  = attribute.Key("outpost.datacenter")
	attrGateway     = attribute.Key("outpost.gateway")
	attrAssignment  = attribute.Key("outpost.assignment.id")
	attrNodeState   = attribute.Key("outpost.node.state")
	attrState       = attribute.Key("outpost.rollout.state")
	attrInterrupted = attribute.Key("outpost.interrupted")
)

// Span names.
const (
	SpanRollout = "outpost.rollout"
	SpanBatch   = "outpost.batch"
	SpanNode    = "outpost.node_deployment"
)

// One trace per rollout, across leadership terms: the rollout stores only
// its trace id, and every term's spans hang under one parent span context
// whose span id is derived from the rollout id. That parent is never
// exported itself; it is the rollout's identity in its trace.

// NewTraceID returns a random trace id, hex encoded, for a new rollout.
func NewTraceID() string {
	var id trace.TraceID
	_, _ = rand.Read(id[:])
	return id.String()
}

// ParentContext returns ctx carrying the remote parent of every span of
// rollout r (id and trace_id), or ctx unchanged when r has no trace id.
func ParentContext(ctx context.Context, id, traceID string) context.Context {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil || !tid.IsValid() {
		return ctx
	}
	sum := sha256.Sum256([]byte("outpost rollout " + id))
	var sid trace.SpanID
	copy(sid[:], sum[:8])
	if !sid.IsValid() {
		sid[7] = 1
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     sid,
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// startSpans starts the rollout span of this term and, when a batch is
// running, its batch span.
func (e *Engine) startSpans(r *run, resumed bool) {
	ctx := ParentContext(context.Background(), r.id(), r.r.GetTraceId())
	r.ctx, r.span = e.tracer.Start(ctx, SpanRollout, trace.WithAttributes(
		attrRollout.String(r.id()), attrApp.String(r.r.GetApp()),
		attrRevision.Int64(r.r.GetRevision()), attrResumed.Bool(resumed),
	))
	cur := int(r.r.GetCurrentStage())
	if cur >= 0 && cur < len(r.r.GetStages()) {
		if b := r.r.GetStages()[cur].GetCurrentBatch(); b >= 0 && r.r.GetStages()[cur].GetState() == outpostv1.StageState_STAGE_STATE_RUNNING {
			e.startBatchSpan(r)
		}
	}
}

func (e *Engine) startBatchSpan(r *run) {
	e.endBatchSpan(r)
	if r.ctx == nil {
		return
	}
	cur := int(r.r.GetCurrentStage())
	st := r.r.GetStages()[cur]
	b := int(st.GetCurrentBatch())
	r.batchCtx, r.batchSpan = e.tracer.Start(r.ctx, SpanBatch, trace.WithAttributes(
		attrRollout.String(r.id()), attrStage.String(st.GetName()), attrBatch.Int(b),
		attrBatchSize.Int(len(r.batches[cur][b])),
	))
}

func (e *Engine) endBatchSpan(r *run) {
	if r.batchSpan != nil {
		r.batchSpan.End()
		r.batchSpan = nil
	}
}

// startNodeSpan starts the span of one node deployment under the batch.
func (e *Engine) startNodeSpan(r *run, n *nodeRun, resumed bool) trace.Span {
	parent := r.batchCtx
	if parent == nil {
		parent = r.ctx
	}
	if parent == nil {
		parent = context.Background()
	}
	_, sp := e.tracer.Start(parent, SpanNode, trace.WithAttributes(
		attrRollout.String(r.id()), attrNode.String(n.id()), attrDatacenter.String(n.rn.GetDatacenter()),
		attrStage.String(n.rn.GetStage()), attrBatch.Int(n.batch), attrResumed.Bool(resumed),
	))
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
	n.span.SetAttributes(attrNodeState.String(rolloutstate.NodeName(n.rn.GetState())))
	if errMsg != "" {
		n.span.SetStatus(codes.Error, errMsg)
	}
	n.span.End()
	n.span = nil
}

// endSpans ends the term's spans of a rollout that did not finish.
func (r *run) endSpans(why string) {
	for _, n := range r.order {
		if n.span != nil {
			n.span.SetAttributes(attrInterrupted.String(why))
			n.span.End()
			n.span = nil
		}
	}
	if r.batchSpan != nil {
		r.batchSpan.SetAttributes(attrInterrupted.String(why))
		r.batchSpan.End()
		r.batchSpan = nil
	}
	if r.span != nil {
		r.span.SetAttributes(attrInterrupted.String(why))
		r.span.End()
		r.span = nil
	}
}

// endSpansStatus ends the spans of a finished rollout; a non-empty errMsg
// marks the rollout span as an error.
func (r *run) endSpansStatus(errMsg, state string) {
	if r.batchSpan != nil {
		r.batchSpan.End()
		r.batchSpan = nil
	}
	if r.span != nil {
		r.span.SetAttributes(attrState.String(state))
		if errMsg != "" {
			r.span.SetStatus(codes.Error, errMsg)
		}
		r.span.End()
		r.span = nil
	}
}

package controlplane

import (
	"context"
	"strings"
	"testing"

	"github.com/outposthq/outpost/controlplane/rollout"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestRolloutSpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	s := startCP(t, t.TempDir(), withTracer(tp))
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = succeedAll
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("2", 0), digest)
	if len(r.GetTraceId()) != 32 {
		t.Fatalf("trace id = %q, want 32 hex digits", r.GetTraceId())
	}
	waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))

	var rolloutSpans, batches, nodes []sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.SpanContext().TraceID().String() != r.GetTraceId() {
			continue
		}
		switch sp.Name() {
		case rollout.SpanRollout:
			rolloutSpans = append(rolloutSpans, sp)
		case rollout.SpanBatch:
			batches = append(batches, sp)
		case rollout.SpanNode:
			nodes = append(nodes, sp)
		}
	}
	if len(rolloutSpans) != 1 || len(batches) != 2 || len(nodes) != 4 {
		t.Fatalf("spans in the rollout's trace: %d rollout, %d batch, %d node; want 1, 2, 4", len(rolloutSpans), len(batches), len(nodes))
	}
	root := rolloutSpans[0]
	// The rollout span hangs under the rollout's stored identity, so a
	// resumed rollout's spans join the same trace.
	parent := rollout.ParentContext(context.Background(), r.GetId(), r.GetTraceId())
	if got, want := root.Parent().SpanID(), spanContextOf(parent).SpanID(); got != want {
		t.Errorf("rollout span parent = %v, want the rollout's stored context %v", got, want)
	}
	batchIDs := map[string]bool{}
	for _, b := range batches {
		if b.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("batch span parent = %v, want the rollout span", b.Parent().SpanID())
		}
		batchIDs[b.SpanContext().SpanID().String()] = true
	}
	nodeSpanIDs := map[string]bool{}
	for _, n := range nodes {
		if !batchIDs[n.Parent().SpanID().String()] {
			t.Errorf("node span parent %v is not a batch span", n.Parent().SpanID())
		}
		nodeSpanIDs[n.SpanContext().SpanID().String()] = true
	}
	// Each assignment carries its node span's W3C context for the gateway.
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for _, a := range gw.received {
		tp := a.GetTraceContext()["traceparent"]
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != r.GetTraceId() || !nodeSpanIDs[parts[2]] {
			t.Errorf("assignment %s traceparent %q: want the rollout's trace and a node span", a.GetAssignmentId(), tp)
		}
	}
}

func spanContextOf(ctx context.Context) trace.SpanContext { return trace.SpanContextFromContext(ctx) }

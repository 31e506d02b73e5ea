package telemetry

import (
	"context"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestValueSpelling(t *testing.T) {
	tests := []struct{ got, want string }{
		{NodeStateValue(outpostv1.NodeState_NODE_STATE_ROLLED_BACK), "rolled_back"},
		{NodeStateValue(outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED), "rollback_failed"},
		{RolloutStateValue(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL), "pending_approval"},
		{StepValue(outpostv1.Step_STEP_UPLOAD), "upload"},
		{KindValue(outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK), "run_hook"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestServerAttrs(t *testing.T) {
	tests := []struct {
		addr, host string
		port       int64
	}{
		{"10.0.0.7:2222", "10.0.0.7", 2222},
		{"10.0.0.7", "10.0.0.7", 22},
		{"[::1]:22", "::1", 22},
		{"web-1.internal", "web-1.internal", 22},
	}
	for _, tt := range tests {
		kv := ServerAttrs(tt.addr, 22)
		if kv[0].Value.AsString() != tt.host || kv[1].Value.AsInt64() != tt.port {
			t.Errorf("ServerAttrs(%q) = %v, want %s:%d", tt.addr, kv, tt.host, tt.port)
		}
	}
}

// A root span started with WithRootIDs has those ids; without, random
// ones; a child span keeps its parent's trace.
func TestWithRootIDs(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(ProviderOptions(Service{Name: "t"}, sdktrace.WithSpanProcessor(rec))...)
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer("t")
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")

	ctx, root := tr.Start(WithRootIDs(context.Background(), tid, sid), "root", trace.WithNewRoot())
	if sc := root.SpanContext(); sc.TraceID() != tid || sc.SpanID() != sid {
		t.Errorf("root ids %v/%v, want %v/%v", sc.TraceID(), sc.SpanID(), tid, sid)
	}
	_, child := tr.Start(ctx, "child")
	if sc := child.SpanContext(); sc.TraceID() != tid || sc.SpanID() == sid || !sc.SpanID().IsValid() {
		t.Errorf("child ids %v/%v: want trace %v and a new span id", sc.TraceID(), sc.SpanID(), tid)
	}
	_, again := tr.Start(WithRootIDs(context.Background(), tid, trace.SpanID{}), "again", trace.WithNewRoot())
	if sc := again.SpanContext(); sc.TraceID() != tid || sc.SpanID() == sid {
		t.Errorf("second root in the trace: %v/%v", sc.TraceID(), sc.SpanID())
	}
	_, other := tr.Start(context.Background(), "other")
	if other.SpanContext().TraceID() == tid || !other.SpanContext().IsValid() {
		t.Errorf("a root without WithRootIDs joined trace %v", other.SpanContext().TraceID())
	}
	if got := LogArgs(ctx); len(got) != 2 || got[0] != LogTraceID || got[1] != tid.String() {
		t.Errorf("LogArgs = %v", got)
	}
	if got := LogArgs(context.Background()); got != nil {
		t.Errorf("LogArgs without a span = %v, want none", got)
	}
}

func TestResource(t *testing.T) {
	res := Resource(Service{Name: ServiceGateway, Version: "v1.2.3", InstanceID: "gw-fra1"})
	got := map[string]string{}
	for _, kv := range res.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{"service.name": ServiceGateway, "service.version": "v1.2.3", "service.instance.id": "gw-fra1"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if got["host.name"] == "" {
		t.Errorf("no host.name in %v", got)
	}
}

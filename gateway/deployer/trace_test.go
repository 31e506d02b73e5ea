package deployer

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestDeploySpans(t *testing.T) {
	tg := fleetTarget(t)
	f := newFixture(t, tg, "app")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(t.Context()) })
	d, err := New(Config{Dial: f.dial, Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	_, evs := f.deploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))

	// The health check's HTTP attempts are CLIENT spans of their own.
	var spans []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "GET" {
			if s.SpanKind() != trace.SpanKindClient || len(s.Attributes()) < 3 {
				t.Errorf("health attempt span: kind %v attributes %v; want CLIENT with server.address/port", s.SpanKind(), s.Attributes())
			}
			continue
		}
		spans = append(spans, s)
	}
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == "deployer.deploy" {
			root = s
		}
	}
	if root == nil {
		t.Fatalf("no deployer.deploy span among %d", len(spans))
	}
	ends := 0
	for _, ev := range evs.list() {
		if ev.GetPhase() != outpostv1.StepPhase_STEP_PHASE_STARTED {
			ends++
		}
	}
	if len(spans) != ends+1 {
		t.Errorf("%d spans, want one per step (%d) and the deployment's", len(spans), ends)
	}
	for _, s := range spans {
		if s == root {
			continue
		}
		if s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("span %s is not a child of the deployment span", s.Name())
		}
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("step span %s is %v, want CLIENT (an exchange with the node)", s.Name(), s.SpanKind())
		}
		if s.EndTime().Before(s.StartTime()) {
			t.Errorf("span %s ends before it starts", s.Name())
		}
	}
}

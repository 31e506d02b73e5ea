package deployer

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

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

	spans := rec.Ended()
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
		if s.EndTime().Before(s.StartTime()) {
			t.Errorf("span %s ends before it starts", s.Name())
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestTracePerNodeDeployment records the spans of the control plane and
// both gateways and checks the shape: the rollout's trace (root, stage,
// batches), a trace per node deployment whose root is the control plane's
// node span, the gateways' deployment span directly under it and every
// step (a CLIENT span to the node's SSH server) below that.
func TestTracePerNodeDeployment(t *testing.T) {
	const hosts = 4
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(telemetry.ProviderOptions(telemetry.Service{Name: "outpost-test"}, sdktrace.WithSpanProcessor(rec))...)
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	s := newSystem(t, hosts, alternateDC, withTracer(tp))
	s.twoGateways()
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "2", 0), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout ended %v: %q", done.GetState(), done.GetMessage())
	}
	if done.GetTraceId() == "" || done.GetTraceId() != r.GetTraceId() {
		t.Fatalf("trace id %q after the rollout, %q at creation", done.GetTraceId(), r.GetTraceId())
	}
	recs := s.rolloutNodes(r.GetId())

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, sp := range rec.Ended() {
		byID[sp.SpanContext().SpanID()] = sp
		byName[sp.Name()] = append(byName[sp.Name()], sp)
	}
	inRollout := func(name string) int {
		n := 0
		for _, sp := range byName[name] {
			if sp.SpanContext().TraceID().String() == r.GetTraceId() {
				n++
			}
		}
		return n
	}
	if a, b, c := inRollout(rollout.SpanRollout), inRollout(rollout.SpanStage), inRollout(rollout.SpanBatch); a != 1 || b != 1 || c != 2 {
		t.Fatalf("rollout trace: %d root, %d stage, %d batch spans; want 1, 1, 2", a, b, c)
	}
	// node id -> its control plane span, the root of its own trace
	nodeSpans := map[string]sdktrace.ReadOnlySpan{}
	for _, n := range byName[rollout.SpanNode] {
		node := attr(n, string(telemetry.AttrNodeID))
		if n.Parent().IsValid() || n.SpanContext().TraceID().String() != recs[node].GetTraceId() {
			t.Errorf("node span %v: parent %v, trace %v; want a root in the trace its record names (%s)",
				attrs(n), n.Parent().SpanID(), n.SpanContext().TraceID(), recs[node].GetTraceId())
		}
		nodeSpans[node] = n
	}

	// The gateways' spans: one deployment per node, directly under the
	// control plane's node span, and every step below it.
	deploys := byName["deployer.deploy"]
	if len(deploys) != hosts {
		t.Fatalf("%d deployer.deploy spans, want %d", len(deploys), hosts)
	}
	for _, d := range deploys {
		node := attr(d, string(telemetry.AttrNodeID))
		if want := nodeSpans[node]; want == nil || d.Parent().SpanID() != want.SpanContext().SpanID() {
			t.Errorf("deployer.deploy of %s: parent %v, want that node's %s span", node, d.Parent().SpanID(), rollout.SpanNode)
		}
	}
	steps := map[string]map[string]bool{} // node -> step names seen
	for _, sp := range rec.Ended() {
		name := sp.Name()
		if !strings.HasPrefix(name, "deployer.") || name == "deployer.deploy" {
			continue
		}
		node := attr(sp, string(telemetry.AttrNodeID))
		if anc := ancestorNamed(byID, sp, rollout.SpanNode); anc == nil || attr(anc, string(telemetry.AttrNodeID)) != node {
			t.Errorf("step span %s of %s does not descend from that node's %s span", name, node, rollout.SpanNode)
		}
		if sp.SpanKind() != trace.SpanKindClient || attr(sp, "server.address") == "" || attr(sp, "server.port") == "" {
			t.Errorf("step span %v: want a CLIENT span with server.address and server.port", attrs(sp))
		}
		if steps[node] == nil {
			steps[node] = map[string]bool{}
		}
		steps[node][strings.TrimPrefix(name, "deployer.")] = true
	}
	for i := range hosts {
		node := e2etest.NodeID(i)
		for _, want := range []string{"connect", "lock", "upload", "switch", "start", "health", "unlock"} {
			if !steps[node][want] {
				t.Errorf("%s: no deployer.%s span; steps seen: %v", node, want, steps[node])
			}
		}
	}
}

// ancestorNamed walks up from sp to the first ancestor called name.
func ancestorNamed(byID map[trace.SpanID]sdktrace.ReadOnlySpan, sp sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	for range 100 {
		p, ok := byID[sp.Parent().SpanID()]
		if !ok {
			return nil
		}
		if p.Name() == name {
			return p
		}
		sp = p
	}
	return nil
}

func attr(sp sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range sp.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func attrs(sp sdktrace.ReadOnlySpan) string {
	var parts []string
	for _, kv := range sp.Attributes() {
		parts = append(parts, fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit()))
	}
	return sp.Name() + "{" + strings.Join(parts, " ") + "}"
}

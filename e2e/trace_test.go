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
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestOneTracePerRollout records the spans of the control plane and both
// gateways and checks the tree: the rollout's spans, its batches, a span
// per node deployment under its batch, and the gateways' deployment and
// step spans under the control plane's node spans, all in one trace.
func TestOneTracePerRollout(t *testing.T) {
	const hosts = 4
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
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

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, sp := range rec.Ended() {
		if got := sp.SpanContext().TraceID().String(); got != r.GetTraceId() {
			t.Errorf("span %s is in trace %s, want the rollout's %s", sp.Name(), got, r.GetTraceId())
			continue
		}
		byID[sp.SpanContext().SpanID()] = sp
		byName[sp.Name()] = append(byName[sp.Name()], sp)
	}
	if n, b, d := len(byName[rollout.SpanRollout]), len(byName[rollout.SpanBatch]), len(byName[rollout.SpanNode]); n != 1 || b != 2 || d != hosts {
		t.Fatalf("%d rollout, %d batch, %d node spans; want 1, 2, %d", n, b, d, hosts)
	}
	root := byName[rollout.SpanRollout][0]
	for _, b := range byName[rollout.SpanBatch] {
		if b.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("batch span %v has parent %v, want the rollout span", attrs(b), b.Parent().SpanID())
		}
	}
	// node id -> its control plane span
	nodeSpans := map[string]sdktrace.ReadOnlySpan{}
	for _, n := range byName[rollout.SpanNode] {
		if p, ok := byID[n.Parent().SpanID()]; !ok || p.Name() != rollout.SpanBatch {
			t.Errorf("node span %v: parent is not a batch span", attrs(n))
		} else if attr(p, "outpost.batch") != attr(n, "outpost.batch") {
			t.Errorf("node span %v hangs under batch %s", attrs(n), attr(p, "outpost.batch"))
		}
		nodeSpans[attr(n, "outpost.node.id")] = n
	}

	// The gateways' spans: one deployment per node, directly under the
	// control plane's node span, and every step below it.
	deploys := byName["deployer.deploy"]
	if len(deploys) != hosts {
		t.Fatalf("%d deployer.deploy spans, want %d", len(deploys), hosts)
	}
	for _, d := range deploys {
		node := attr(d, "outpost.node_id")
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
		node := attr(sp, "outpost.node_id")
		if anc := ancestorNamed(byID, sp, rollout.SpanNode); anc == nil || attr(anc, "outpost.node.id") != node {
			t.Errorf("step span %s of %s does not descend from that node's %s span", name, node, rollout.SpanNode)
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

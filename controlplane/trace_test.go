package controlplane

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestTraceShape runs a 4-node rollout, one node failing, and checks the
// traces: the rollout's (root → stage → batches, every parent recorded),
// one per node deployment whose root is the control plane's node span,
// links both ways, the trace id in each node's record and audit entry,
// the failed node's span an error with an exception event, and the API
// call a SERVER span.
func TestTraceShape(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(telemetry.ProviderOptions(telemetry.Service{Name: telemetry.ServiceControlPlane}, sdktrace.WithSpanProcessor(rec))...)
	defer tp.Shutdown(context.Background())
	s := startCP(t, t.TempDir(), withTracer(tp))
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	failing := nodeID(1)
	gw.auto = func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		if a.GetNode().GetId() == failing {
			return outpostv1.NodeState_NODE_STATE_FAILED, "health check failed"
		}
		return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	}
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("2", 50), digest)
	if len(r.GetTraceId()) != 32 {
		t.Fatalf("trace id = %q, want 32 hex digits", r.GetTraceId())
	}
	waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))

	resp, err := c.ListRolloutNodes(ctxT(t), &outpostv1.ListRolloutNodesRequest{RolloutId: r.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	nodeTrace := map[string]string{} // node id -> trace id from its record
	for _, n := range resp.GetNodes() {
		if len(n.GetTraceId()) != 32 || n.GetTraceId() == r.GetTraceId() {
			t.Errorf("node %s: trace id %q, want its own 32 hex digits", n.GetNodeId(), n.GetTraceId())
		}
		nodeTrace[n.GetNodeId()] = n.GetTraceId()
	}

	spans := rec.Ended()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, sp := range spans {
		byID[sp.SpanContext().SpanID()] = sp
	}
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, sp := range spans {
		byName[sp.Name()] = append(byName[sp.Name()], sp)
		if p := sp.Parent(); p.IsValid() && !p.IsRemote() {
			if _, ok := byID[p.SpanID()]; !ok {
				t.Errorf("span %s has parent %v, which was never ended", sp.Name(), p.SpanID())
			}
		}
	}

	// The rollout's trace.
	roots := byName[rollout.SpanRollout]
	if len(roots) != 1 {
		t.Fatalf("%d %s spans, want 1", len(roots), rollout.SpanRollout)
	}
	root := roots[0]
	if root.SpanContext().TraceID().String() != r.GetTraceId() || root.Parent().IsValid() || root.SpanContext().SpanID() != rollout.RootSpanID(r.GetId()) {
		t.Errorf("rollout root: trace %v parent %v span %v; want the rollout's trace, no parent, its derived span id",
			root.SpanContext().TraceID(), root.Parent().SpanID(), root.SpanContext().SpanID())
	}
	stages, batches := byName[rollout.SpanStage], byName[rollout.SpanBatch]
	if len(stages) != 1 || len(batches) != 2 || len(byName[rollout.SpanRolloutEnd]) != 1 {
		t.Fatalf("%d stage, %d batch, %d end spans; want 1, 2, 1", len(stages), len(batches), len(byName[rollout.SpanRolloutEnd]))
	}
	if stages[0].Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("stage span's parent is not the rollout root")
	}
	batchIDs := map[trace.SpanID]bool{}
	linkedFromBatch := map[trace.TraceID]bool{}
	for _, b := range batches {
		if b.Parent().SpanID() != stages[0].SpanContext().SpanID() {
			t.Errorf("batch span's parent is not the stage span")
		}
		batchIDs[b.SpanContext().SpanID()] = true
		for _, l := range b.Links() {
			linkedFromBatch[l.SpanContext.TraceID()] = true
		}
	}

	// One trace per node deployment, its root the node span.
	nodeSpans := map[string]sdktrace.ReadOnlySpan{}
	for _, n := range byName[rollout.SpanNode] {
		node := attrOf(n, telemetry.AttrNodeID)
		nodeSpans[node] = n
		if n.Parent().IsValid() {
			t.Errorf("node span of %s has a parent: it must be its trace's root", node)
		}
		if got := n.SpanContext().TraceID().String(); got != nodeTrace[node] {
			t.Errorf("node span of %s is in trace %s; its record says %s", node, got, nodeTrace[node])
		}
		if len(n.Links()) != 1 || !batchIDs[n.Links()[0].SpanContext.SpanID()] {
			t.Errorf("node span of %s links to %v, want its batch span", node, n.Links())
		}
		if !linkedFromBatch[n.SpanContext().TraceID()] {
			t.Errorf("no batch span links to the trace of %s", node)
		}
		wantState := "succeeded"
		if node == failing {
			wantState = "failed"
		}
		if got := attrOf(n, telemetry.AttrNodeState); got != wantState {
			t.Errorf("node span of %s: state %q, want %q", node, got, wantState)
		}
	}
	if len(nodeSpans) != 4 {
		t.Fatalf("node spans for %d nodes, want 4", len(nodeSpans))
	}
	f := nodeSpans[failing]
	if f.Status().Code != codes.Error || !hasEvent(f, "exception") {
		t.Errorf("failed node's span: status %v, events %v; want an error and an exception event", f.Status(), f.Events())
	}
	if ok := nodeSpans[nodeID(0)]; ok.Status().Code == codes.Error {
		t.Errorf("succeeded node's span has status %v", ok.Status())
	}

	// Each assignment carries its node span's W3C context for the gateway.
	gw.mu.Lock()
	for _, a := range gw.received {
		parts := strings.Split(a.GetTraceContext()["traceparent"], "-")
		n := nodeSpans[a.GetNode().GetId()]
		if len(parts) != 4 || n == nil || parts[1] != n.SpanContext().TraceID().String() || parts[2] != n.SpanContext().SpanID().String() {
			t.Errorf("assignment %s traceparent %v: want the node span of %s", a.GetAssignmentId(), parts, a.GetNode().GetId())
		}
	}
	gw.mu.Unlock()

	// The API call is a SERVER span.
	var server bool
	for _, sp := range byName["outpost.v1.ControlPlaneService/CreateRollout"] {
		server = server || sp.SpanKind() == trace.SpanKindServer
	}
	if !server {
		t.Errorf("no SERVER span for CreateRollout")
	}

	// The failed node's audit entry names its trace.
	ac := outpostv1.NewAuditServiceClient(c.conn)
	var got string
	for range 100 {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: r.GetId(), PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			if e.GetAction() == "node.result" && e.GetNodeId() == failing {
				got = e.GetDetails()["trace_id"]
			}
		}
		if got != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got != nodeTrace[failing] {
		t.Errorf("audit entry of %s: trace_id %q, want the node's %q", failing, got, nodeTrace[failing])
	}
}

func attrOf(sp sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range sp.Attributes() {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func hasEvent(sp sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range sp.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestTracesInJaeger exports both daemons' spans of a 20-node rollout,
// one node failing, to a real Jaeger v2 over OTLP/gRPC and reads them back
// through its query API: a trace per node deployment, each with its root
// (the control plane's node span) present and every parent present, each
// linked to the rollout's trace; the failed node's trace holds an error;
// both services under their own names.
func TestTracesInJaeger(t *testing.T) {
	bin := e2etest.EnsureJaeger(t)
	j := e2etest.StartJaeger(t, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cpTP, stopCP, err := telemetry.NewTracerProvider(ctx, telemetry.Service{Name: telemetry.ServiceControlPlane, Version: "test", InstanceID: "cp-1"}, j.OTLP)
	if err != nil {
		t.Fatal(err)
	}
	gwTP, stopGW, err := telemetry.NewTracerProvider(ctx, telemetry.Service{Name: telemetry.ServiceGateway, Version: "test", InstanceID: "gw"}, j.OTLP)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopGW(context.Background())
			stopCP(context.Background())
		}
	}
	defer stop()

	const hosts = 20
	const failing = 7
	s := newSystem(t, hosts, alternateDC, withTracers(cpTP, gwTP))
	s.twoGateways()
	s.fleet.Hosts()[failing].SetFaults(simfleet.Faults{CorruptUploads: true})
	_, digest := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "5", 10), digest)
	done := s.waitDone(r.GetId())
	recs := s.rolloutNodes(r.GetId())
	failedNode := s.nodes[failing].GetId()
	if st := recs[failedNode].GetState(); st == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Fatalf("%s succeeded with corrupt uploads; the test needs it to fail", failedNode)
	}
	s.stopAll() // the gateways' and the control plane's last spans end
	stop()      // and are flushed to Jaeger

	// Both services, under their own names.
	services := waitFor(t, "both services in Jaeger", func() ([]string, bool) {
		got, err := j.Services(ctx)
		return got, err == nil && contains(got, telemetry.ServiceControlPlane) && contains(got, telemetry.ServiceGateway)
	})
	t.Logf("services: %v; rollout %s ended %v", services, r.GetId(), done.GetState())

	// The rollout's trace, with its root.
	rolloutTrace := waitFor(t, "the rollout's trace", func() (e2etest.JaegerTrace, bool) {
		tr, err := j.Trace(ctx, r.GetTraceId())
		return tr, err == nil && findOp(tr, rollout.SpanRollout) != nil && len(opSpans(tr, rollout.SpanBatch)) == hosts/5
	})
	checkParents(t, rolloutTrace)

	// A trace per node deployment: every node's record names it.
	nodeTraces := waitFor(t, "20 node traces with both services' spans", func() (map[string]e2etest.JaegerTrace, bool) {
		out := map[string]e2etest.JaegerTrace{}
		for id, n := range recs {
			tr, err := j.Trace(ctx, n.GetTraceId())
			if err != nil || len(tr.Spans) < 2 {
				return out, false
			}
			out[id] = tr
		}
		return out, len(out) == hosts
	})
	for node, tr := range nodeTraces {
		root := findOp(tr, rollout.SpanNode)
		if root == nil {
			t.Errorf("trace of %s has no %s span", node, rollout.SpanNode)
			continue
		}
		if parent(*root) != "" {
			t.Errorf("trace of %s: the node span has a parent, want it the root", node)
		}
		if got := tr.Processes[root.ProcessID].ServiceName; got != telemetry.ServiceControlPlane {
			t.Errorf("trace of %s: root from service %q", node, got)
		}
		checkParents(t, tr)
		var linked bool
		for _, ref := range root.References {
			linked = linked || ref.TraceID == r.GetTraceId()
		}
		if !linked {
			t.Errorf("trace of %s: root does not link to the rollout trace %s", node, r.GetTraceId())
		}
		var gateway bool
		for _, sp := range tr.Spans {
			gateway = gateway || tr.Processes[sp.ProcessID].ServiceName == telemetry.ServiceGateway
		}
		if !gateway {
			t.Errorf("trace of %s has no gateway span", node)
		}
		// The node deployment's outcome is its root's status (a health
		// check attempt that failed before one succeeded is an error span
		// of its own in a healthy node's trace).
		if errored := isError(*root); errored != (node == failedNode) {
			t.Errorf("trace of %s: root span is an error = %v, want %v", node, errored, node == failedNode)
		}
		if node == failedNode {
			var step bool
			for _, sp := range tr.Spans {
				step = step || (strings.HasPrefix(sp.OperationName, "deployer.") && sp.OperationName != "deployer.deploy" && isError(sp))
			}
			if !step {
				t.Errorf("trace of the failed %s has no failed step span", node)
			}
		}
	}
	// The rollout's batch spans link to every node trace.
	linked := map[string]bool{}
	for _, b := range opSpans(rolloutTrace, rollout.SpanBatch) {
		for _, ref := range b.References {
			linked[ref.TraceID] = true
		}
	}
	for node, n := range recs {
		if !linked[n.GetTraceId()] {
			t.Errorf("no batch span links to the trace of %s", node)
		}
	}
	// Resource attributes of both daemons.
	for _, p := range nodeTraces[failedNode].Processes {
		for _, k := range []string{"service.version", "service.instance.id", "host.name"} {
			if p.Tag(k) == "" {
				t.Errorf("service %s has no %s", p.ServiceName, k)
			}
		}
	}
}

func isError(sp e2etest.JaegerSpan) bool {
	return sp.Tag("otel.status_code") == "ERROR" || sp.Tag("error") == "true"
}

// checkParents reports spans of tr whose parent is not in tr.
func checkParents(t *testing.T, tr e2etest.JaegerTrace) {
	t.Helper()
	ids := map[string]bool{}
	for _, sp := range tr.Spans {
		ids[sp.SpanID] = true
	}
	for _, sp := range tr.Spans {
		if p := parent(sp); p != "" && !ids[p] {
			t.Errorf("trace %s: span %s has parent %s, which Jaeger does not have", tr.TraceID, sp.OperationName, p)
		}
	}
}

// parent is the id of sp's parent in its own trace, "" for a root.
func parent(sp e2etest.JaegerSpan) string {
	for _, ref := range sp.References {
		if ref.RefType == "CHILD_OF" && ref.TraceID == sp.TraceID {
			return ref.SpanID
		}
	}
	return ""
}

func findOp(tr e2etest.JaegerTrace, op string) *e2etest.JaegerSpan {
	if s := opSpans(tr, op); len(s) > 0 {
		return &s[0]
	}
	return nil
}

func opSpans(tr e2etest.JaegerTrace, op string) []e2etest.JaegerSpan {
	var out []e2etest.JaegerSpan
	for _, sp := range tr.Spans {
		if sp.OperationName == op {
			out = append(out, sp)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitFor polls get until it reports done, for at most 30 s.
func waitFor[T any](t *testing.T, what string, get func() (T, bool)) T {
	t.Helper()
	var last T
	for range 300 {
		v, ok := get()
		if ok {
			return v
		}
		last = v
		time.Sleep(100 * time.Millisecond)
	}
	text := fmt.Sprint(last)
	if len(text) > 500 {
		text = text[:500] + "…"
	}
	t.Fatalf("no %s in Jaeger after 30 s; last: %s", what, text)
	return last
}

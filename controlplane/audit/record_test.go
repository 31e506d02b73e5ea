package audit_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestRecordRollout records what the engine reports for a one-node
// rollout that is approved, runs, fails its health check and is rolled
// back, and checks every entry.
func TestRecordRollout(t *testing.T) {
	s := storetest.Open(t)
	l := openLog(t, s, audit.Config{ReplicaName: "cp-1", BatchDelay: time.Millisecond})
	traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	ctx := trace.ContextWithSpanContext(ctxT(t), trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: trace.SpanID{1}}))
	r := &outpostv1.Rollout{
		Id: "r-000042", App: "billing-api", Revision: 7, ReleaseId: "r7-1a2b3c4d",
		Plan: &outpostv1.PlanSpec{Environment: "prod", ChangeId: "SR-2026-1142"},
	}
	step := func(s outpostv1.Step, phase outpostv1.StepPhase, errText string) *outpostv1.NodeStepEvent {
		return &outpostv1.NodeStepEvent{RolloutId: r.Id, NodeId: "srv-0001", Step: s, Phase: phase, Error: errText,
			Duration: durationpb.New(1500 * time.Millisecond)}
	}
	const (
		approved = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED
		pending  = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
		running  = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
		failed   = outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK
		ok       = outpostv1.StepPhase_STEP_PHASE_SUCCEEDED
		started  = outpostv1.StepPhase_STEP_PHASE_STARTED
	)
	l.RecordRolloutState(ctx, r, outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED, pending, "")
	l.RecordRolloutState(ctx, r, pending, approved, "approved by bob")
	l.RecordRolloutState(ctx, r, approved, running, "")
	l.RecordNodeStep(ctx, "gw-seoul", step(outpostv1.Step_STEP_CONNECT, started, "")) // ignored: not a result
	l.RecordNodeStep(ctx, "gw-seoul", step(outpostv1.Step_STEP_CONNECT, ok, ""))
	l.RecordNodeStep(ctx, "gw-seoul", step(outpostv1.Step_STEP_HEALTH, outpostv1.StepPhase_STEP_PHASE_FAILED, "GET /health: 503"))
	l.RecordNodeStep(ctx, "gw-seoul", step(outpostv1.Step_STEP_ROLLBACK, ok, ""))
	l.RecordNodeResult(ctx, r.Id, "srv-0001", outpostv1.NodeState_NODE_STATE_ROLLED_BACK, outpostv1.Step_STEP_HEALTH, "GET /health: 503", "gw-seoul")
	l.RecordRolloutNode(ctx, r.Id, &outpostv1.RolloutNode{NodeId: "srv-0002", State: outpostv1.NodeState_NODE_STATE_SKIPPED})
	l.RecordRolloutState(ctx, r, running, failed, "stage canary: 1 of 1 nodes failed (100% > 10%)")
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	system := func(from, to, msg string) *outpostv1.AuditEntry {
		return &outpostv1.AuditEntry{
			Actor: "cp-1", ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM, Action: "rollout.state",
			Resource: "rollouts/r-000042", RolloutId: "r-000042", Result: "OK", Message: msg,
			Details: map[string]string{"from": from, "to": to, "app": "billing-api", "environment": "prod",
				"change_id": "SR-2026-1142", "revision": "7", "release": "r7-1a2b3c4d", "trace_id": traceID.String()},
		}
	}
	node := func(action, result, msg string, details map[string]string) *outpostv1.AuditEntry {
		details["gateway"] = "gw-seoul"
		details["trace_id"] = traceID.String()
		return &outpostv1.AuditEntry{
			Actor: "gw-seoul", ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY, Action: action,
			Resource: "nodes/srv-0001", RolloutId: "r-000042", NodeId: "srv-0001", Result: result, Message: msg, Details: details,
		}
	}
	want := []*outpostv1.AuditEntry{
		system("NEW", "PENDING_APPROVAL", "NEW -> PENDING_APPROVAL"),
		system("PENDING_APPROVAL", "APPROVED", "PENDING_APPROVAL -> APPROVED: approved by bob"),
		system("APPROVED", "RUNNING", "APPROVED -> RUNNING"),
		// The steps are folded into the node's result entry.
		node("node.result", "FAILED", "ROLLED_BACK: GET /health: 503", map[string]string{"state": "ROLLED_BACK", "step": "health",
			"steps": "connect ok 1.5s, health FAILED 1.5s, rollback ok 1.5s"}),
		{
			Actor: "cp-1", ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM, Action: "node.result",
			Resource: "nodes/srv-0002", RolloutId: "r-000042", NodeId: "srv-0002", Result: "OK", Message: "SKIPPED",
			Details: map[string]string{"state": "SKIPPED", "trace_id": traceID.String()},
		},
		system("RUNNING", "FAILED_ROLLED_BACK", "RUNNING -> FAILED_ROLLED_BACK: stage canary: 1 of 1 nodes failed (100% > 10%)"),
	}
	got := listAll(t, l, audit.Query{RolloutID: "r-000042"}, 100)
	opts := cmp.Options{protocmp.Transform(), protocmp.IgnoreFields(&outpostv1.AuditEntry{}, "time", "sequence", "previous_hash", "hash")}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	checkOrder(t, got, 1)
}

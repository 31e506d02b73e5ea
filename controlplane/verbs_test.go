package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rolloutVerbs are the rollout verbs with the states they apply to; every
// other state is refused. promote applies to no state of its own (a stage
// that waits for promotion or bakes), so none of verbFixtures'.
var rolloutVerbs = []struct {
	name    string
	method  string
	applies []outpostv1.RolloutState
	call    func(ctx context.Context, c *client, id, requestID string) error
}{
	{"abort", outpostv1.ControlPlaneService_AbortRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL, outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
			outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.RolloutState_ROLLOUT_STATE_PAUSED},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.AbortRollout(ctx, &outpostv1.AbortRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"pause", outpostv1.ControlPlaneService_PauseRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_RUNNING},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"resume", outpostv1.ControlPlaneService_ResumeRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.ResumeRollout(ctx, &outpostv1.ResumeRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"promote", outpostv1.ControlPlaneService_PromoteRollout_FullMethodName, nil,
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.PromoteRollout(ctx, &outpostv1.PromoteRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"retry", outpostv1.ControlPlaneService_RetryRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
			outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.RetryRollout(ctx, &outpostv1.RetryRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"approve", outpostv1.ControlPlaneService_ApproveRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.ApproveRollout(ctx, &outpostv1.ApproveRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"reject", outpostv1.ControlPlaneService_RejectRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL, outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.RejectRollout(ctx, &outpostv1.RejectRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
	{"validate", outpostv1.ControlPlaneService_ValidateRollout_FullMethodName,
		[]outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION},
		func(ctx context.Context, c *client, id, rid string) error {
			_, err := c.ValidateRollout(ctx, &outpostv1.ValidateRolloutRequest{Id: id, RequestId: rid})
			return err
		}},
}

func stateName(s outpostv1.RolloutState) string {
	return strings.TrimPrefix(s.String(), "ROLLOUT_STATE_")
}

// verbFixtures creates a rollout in every state, each of its own app (so
// none waits for another, except the APPROVED one, which waits behind
// the RUNNING one of its app), and returns their ids by state.
func verbFixtures(t *testing.T, s *Server, c *client) map[outpostv1.RolloutState]string {
	t.Helper()
	// dc1's nodes have a gateway that answers at once (health checks,
	// which only the canary's bake runs, fail); dc2's node has none, so
	// its rollouts stay RUNNING.
	nodes := []*outpostv1.Node{
		{Id: "srv-a", Address: "127.0.9.1:22", Datacenter: "dc1", User: "deploy", Labels: map[string]string{"app": "billing-api"}},
		{Id: "srv-b", Address: "127.0.9.2:22", Datacenter: "dc1", User: "deploy", Labels: map[string]string{"app": "billing-api"}},
		{Id: "srv-c", Address: "127.0.9.3:22", Datacenter: "dc2", User: "deploy", Labels: map[string]string{"app": "stuck"}},
	}
	if _, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: nodes}); err != nil {
		t.Fatalf("ApplyNodes: %v", err)
	}
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	k := &kindAuto{check: func(*outpostv1.Assignment) (outpostv1.NodeState, string) {
		return outpostv1.NodeState_NODE_STATE_FAILED, "status 503, want 200"
	}}
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = k.answer
	gw.connect(s.Addr())
	t.Cleanup(gw.disconnect)

	plan := func(app string, stuck bool) *outpostv1.PlanSpec {
		spec := rollingPlan("100%", 0)
		spec.App = app
		if stuck {
			spec.Targets.Selector = map[string]string{"app": "stuck"}
		}
		return spec
	}
	withApproval := func(spec *outpostv1.PlanSpec) *outpostv1.PlanSpec {
		spec.Approval = &outpostv1.PlanApproval{Required: true}
		return spec
	}
	withValidation := func(spec *outpostv1.PlanSpec) *outpostv1.PlanSpec {
		spec.Validation = &outpostv1.PlanValidation{Required: true}
		return spec
	}
	reach := func(spec *outpostv1.PlanSpec, st outpostv1.RolloutState) string {
		t.Helper()
		r := createRollout(t, c, spec, digest)
		waitRollout(t, c, r.GetId(), stateName(st), stateIs(st))
		return r.GetId()
	}
	ids := map[outpostv1.RolloutState]string{}
	ids[outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL] = reach(withApproval(plan("pending", false)), outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL)
	ids[outpostv1.RolloutState_ROLLOUT_STATE_RUNNING] = reach(plan("stuck", true), outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	ids[outpostv1.RolloutState_ROLLOUT_STATE_APPROVED] = reach(plan("stuck", true), outpostv1.RolloutState_ROLLOUT_STATE_APPROVED)
	paused := reach(plan("paused", true), outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	if _, err := c.PauseRollout(ctxT(t), &outpostv1.PauseRolloutRequest{Id: paused}); err != nil {
		t.Fatalf("pause: %v", err)
	}
	ids[outpostv1.RolloutState_ROLLOUT_STATE_PAUSED] = paused
	ids[outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED] = reach(plan("ok", false), outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED)
	ids[outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION] = reach(withValidation(plan("validation", false)), outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION)
	validated := reach(withValidation(plan("validated", false)), outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION)
	if _, err := c.ValidateRollout(ctxT(t), &outpostv1.ValidateRolloutRequest{Id: validated}); err != nil {
		t.Fatalf("validate: %v", err)
	}
	ids[outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED] = validated
	aborted := reach(withApproval(plan("aborted", false)), outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL)
	if _, err := c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: aborted}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	ids[outpostv1.RolloutState_ROLLOUT_STATE_ABORTED] = aborted
	rejected := reach(withApproval(plan("rejected", false)), outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL)
	if _, err := c.RejectRollout(ctxT(t), &outpostv1.RejectRolloutRequest{Id: rejected}); err != nil {
		t.Fatalf("reject: %v", err)
	}
	ids[outpostv1.RolloutState_ROLLOUT_STATE_REJECTED] = rejected
	canary := canaryPlan("1m", "")
	canary.App = "canary"
	ids[outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK] = reach(canary, outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK)
	for st, id := range ids {
		if got := getState(t, c, id); got != st {
			t.Fatalf("fixture %s is %v, want %v", id, got, st)
		}
	}
	return ids
}

func getState(t *testing.T, c *client, id string) outpostv1.RolloutState {
	t.Helper()
	resp, err := c.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatalf("GetRollout %s: %v", id, err)
	}
	return resp.GetRollout().GetState()
}

// TestVerbsRefuseStatesTheyDoNotApplyTo calls every verb on a rollout in
// every state it does not apply to: each call is FAILED_PRECONDITION
// naming the rollout's state and what the verb applies to, changes
// nothing, and is in the audit log as refused. Undo, too, refuses a
// revision that did not succeed, naming its state.
func TestVerbsRefuseStatesTheyDoNotApplyTo(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	ids := verbFixtures(t, s, c)

	type refusal struct{ method, message string }
	refused := map[string][]refusal{} // by rollout id
	for _, v := range rolloutVerbs {
		for st, id := range ids {
			if slices.Contains(v.applies, st) {
				continue
			}
			t.Run(v.name+" "+stateName(st), func(t *testing.T) {
				err := v.call(ctxT(t), c, id, "")
				want := fmt.Sprintf("rollout %s is %s", id, stateName(st))
				wantCode(t, v.name, err, codes.FailedPrecondition, want)
				wantCode(t, v.name, err, codes.FailedPrecondition, "; "+v.name+" applies only to ")
				refused[id] = append(refused[id], refusal{v.method, status.Convert(err).Message()})
			})
		}
	}
	for st, id := range ids {
		if got := getState(t, c, id); got != st {
			t.Errorf("rollout %s is %v after the refused verbs, want %v still", id, got, st)
		}
	}

	// Undo of a revision that did not succeed names its state.
	for app, st := range map[string]string{"pending": "PENDING_APPROVAL", "stuck": "RUNNING", "aborted": "ABORTED", "rejected": "REJECTED", "canary": "FAILED_ROLLED_BACK"} {
		_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: app, ToRevision: 1}})
		wantCode(t, "undo "+app, err, codes.FailedPrecondition, fmt.Sprintf("revision 1 of %s is %s; undo applies only to a revision that succeeded", app, st))
	}

	// Every refusal is in the audit log, as refused, with its reason.
	ac := outpostv1.NewAuditServiceClient(c.conn)
	for id, want := range refused {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: id, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var got []refusal
		for _, e := range resp.GetEntries() {
			if e.GetResult() == "FAILED_PRECONDITION" {
				got = append(got, refusal{e.GetAction(), e.GetMessage()})
			}
		}
		for _, r := range want {
			if !slices.Contains(got, r) {
				t.Errorf("rollout %s: no FAILED_PRECONDITION audit entry %s %q; entries: %v", id, r.method, r.message, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("rollout %s: %d FAILED_PRECONDITION audit entries, want %d", id, len(got), len(want))
		}
	}
}

// TestApproveTwice: approving an approved rollout is refused and audited
// as refused, while a retry with the first call's request_id, also one
// sent while the first runs, gets the first call's answer.
func TestApproveTwice(t *testing.T) {
	s := startCP(t, t.TempDir())
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 2, nil)
	digest := upload(t, admin, "a.tar.gz", []byte("a"))
	alice := userClient(t, s, "alice", pki.RoleDeployer)
	bob := userClient(t, s, "bob", pki.RoleApprover)
	spec := rollingPlan("100%", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	r := createRollout(t, alice, spec, digest)

	req := &outpostv1.ApproveRolloutRequest{Id: r.GetId(), RequestId: "approve-1"}
	first, err := bob.ApproveRollout(ctxT(t), req)
	if err != nil || first.GetRollout().GetApprover() != "bob" {
		t.Fatalf("approve = %v, %v", first.GetRollout(), err)
	}
	if again, err := bob.ApproveRollout(ctxT(t), req); err != nil || again.GetRollout().GetId() != r.GetId() {
		t.Errorf("the same approve again (request_id approve-1) = %v, %v; want the rollout", again.GetRollout(), err)
	}
	_, err = bob.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r.GetId(), Comment: "again"})
	wantCode(t, "a second approve", err, codes.FailedPrecondition, "; approve applies only to PENDING_APPROVAL")
	wantCode(t, "a second approve", err, codes.FailedPrecondition, "rollout "+r.GetId()+" is ")

	resp, err := outpostv1.NewAuditServiceClient(admin.conn).ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: r.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var approvals []string
	for _, e := range resp.GetEntries() {
		if e.GetAction() == outpostv1.ControlPlaneService_ApproveRollout_FullMethodName {
			approvals = append(approvals, e.GetActor()+" "+e.GetResult()+" "+e.GetRequestId())
		}
	}
	if want := []string{"bob OK approve-1", "bob OK approve-1", "bob FAILED_PRECONDITION "}; !slices.Equal(approvals, want) {
		t.Errorf("approve audit entries = %q, want %q", approvals, want)
	}

	// The same request sent several times at once: every call gets the
	// approved rollout, none is refused by the state the first one left.
	r2 := createRollout(t, alice, spec, digest)
	const calls = 8
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = bob.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r2.GetId(), RequestId: "approve-2"})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent approve %d with one request_id: %v", i, err)
		}
	}
}

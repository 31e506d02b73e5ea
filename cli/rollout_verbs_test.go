package cli

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The fake control plane's rollout verbs (fake_test.go has the rest):
// each records its request in verbCalls and moves the rollout to a state
// as the real engine would.

// verbCalls are the verb requests the fakes received; guarded by verbMu.
var (
	verbMu    sync.Mutex
	verbCalls []proto.Message
)

func verbRequests() []proto.Message {
	verbMu.Lock()
	defer verbMu.Unlock()
	return slices.Clone(verbCalls)
}

func (f *fakeControlPlane) verb(req proto.Message, id string, change func(r *outpostv1.Rollout) error) (*outpostv1.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	verbMu.Lock()
	verbCalls = append(verbCalls, req)
	verbMu.Unlock()
	for _, r := range f.rollouts {
		if r.GetId() == id {
			if err := change(r); err != nil {
				return nil, err
			}
			return proto.CloneOf(r), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "rollout %s not found", id)
}

func setState(s outpostv1.RolloutState, msg string) func(*outpostv1.Rollout) error {
	return func(r *outpostv1.Rollout) error {
		r.State, r.Message = s, msg
		return nil
	}
}

func (f *fakeControlPlane) PauseRollout(_ context.Context, req *outpostv1.PauseRolloutRequest) (*outpostv1.PauseRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, "paused: "+req.GetReason()))
	return &outpostv1.PauseRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) ResumeRollout(_ context.Context, req *outpostv1.ResumeRolloutRequest) (*outpostv1.ResumeRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, ""))
	return &outpostv1.ResumeRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) AbortRollout(_ context.Context, req *outpostv1.AbortRolloutRequest) (*outpostv1.AbortRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_ABORTED, "aborted: "+req.GetReason()))
	return &outpostv1.AbortRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) PromoteRollout(_ context.Context, req *outpostv1.PromoteRolloutRequest) (*outpostv1.PromoteRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), func(r *outpostv1.Rollout) error {
		if req.GetStage() != "" && req.GetStage() != "canary" {
			return status.Errorf(codes.FailedPrecondition, "rollout %s: stage canary waits for promotion, not %s", r.GetId(), req.GetStage())
		}
		r.State, r.Message = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, ""
		return nil
	})
	return &outpostv1.PromoteRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) RetryRollout(_ context.Context, req *outpostv1.RetryRolloutRequest) (*outpostv1.RetryRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, "retrying 2 failed node(s)"))
	return &outpostv1.RetryRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) ApproveRollout(_ context.Context, req *outpostv1.ApproveRolloutRequest) (*outpostv1.ApproveRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), func(r *outpostv1.Rollout) error {
		if r.GetRequester() == "tester" {
			return status.Error(codes.PermissionDenied, "the requester cannot approve their own rollout")
		}
		r.State, r.Approver = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED, "tester"
		return nil
	})
	return &outpostv1.ApproveRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) RejectRollout(_ context.Context, req *outpostv1.RejectRolloutRequest) (*outpostv1.RejectRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_REJECTED, "rejected by tester: "+req.GetReason()))
	return &outpostv1.RejectRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) ValidateRollout(_ context.Context, req *outpostv1.ValidateRolloutRequest) (*outpostv1.ValidateRolloutResponse, error) {
	r, err := f.verb(req, req.GetId(), setState(outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED, "validated by tester: "+req.GetComment()))
	return &outpostv1.ValidateRolloutResponse{Rollout: r}, err
}

func (f *fakeControlPlane) ListRevisions(_ context.Context, req *outpostv1.ListRevisionsRequest) (*outpostv1.ListRevisionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []*outpostv1.Revision
	for _, r := range f.rollouts { // newest first
		if r.GetApp() == req.GetApp() {
			all = append(all, &outpostv1.Revision{
				App: r.GetApp(), Revision: r.GetRevision(), RolloutId: r.GetId(), ReleaseId: r.GetReleaseId(),
				State: r.GetState(), CreateTime: r.GetCreateTime(), Requester: r.GetRequester(), SourceRevision: r.GetSourceRevision(),
			})
		}
	}
	page, next, err := paginate(len(all), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &outpostv1.ListRevisionsResponse{Revisions: all[page[0]:page[1]], NextPageToken: next}, nil
}

func TestRolloutVerbs(t *testing.T) {
	f := startFake(t)
	r := sampleRollout()
	r.Requester = "alice"
	f.addRollout(r)
	tests := []struct {
		args []string
		code int
		want string
		req  proto.Message
	}{
		{[]string{"rollout", "pause", "r-000042", "--reason", "lunch"}, 0, "r-000042: PAUSED (stage rest RUNNING): paused: lunch\n  15 nodes: ",
			&outpostv1.PauseRolloutRequest{Id: "r-000042", Reason: "lunch"}},
		{[]string{"rollout", "resume", "r-000042"}, 0, "r-000042: RUNNING (stage rest RUNNING)\n", &outpostv1.ResumeRolloutRequest{Id: "r-000042"}},
		{[]string{"rollout", "promote", "r-000042", "--stage", "canary"}, 0, "r-000042: RUNNING", &outpostv1.PromoteRolloutRequest{Id: "r-000042", Stage: "canary"}},
		{[]string{"rollout", "promote", "r-000042", "--stage", "rest"}, 1, "promote rollout r-000042: not possible now: rollout r-000042: stage canary waits for promotion, not rest",
			&outpostv1.PromoteRolloutRequest{Id: "r-000042", Stage: "rest"}},
		{[]string{"rollout", "retry", "r-000042", "--node", "srv-1", "--node", "srv-2"}, 0, "r-000042: RUNNING (stage rest RUNNING): retrying 2 failed node(s)",
			&outpostv1.RetryRolloutRequest{Id: "r-000042", NodeIds: []string{"srv-1", "srv-2"}}},
		{[]string{"rollout", "approve", "r-000042", "--comment", "CAB ok"}, 0, "r-000042: APPROVED", &outpostv1.ApproveRolloutRequest{Id: "r-000042", Comment: "CAB ok"}},
		{[]string{"rollout", "validate", "r-000042", "--accept", "--comment", "green"}, 0, "r-000042: VALIDATED: validated by tester: green",
			&outpostv1.ValidateRolloutRequest{Id: "r-000042", Comment: "green"}},
		{[]string{"rollout", "validate", "r-000042", "--reject", "--comment", "broken"}, 0, "r-000042: REJECTED: rejected by tester: broken",
			&outpostv1.RejectRolloutRequest{Id: "r-000042", Reason: "broken"}},
		{[]string{"rollout", "reject", "r-000042", "--reason", "no"}, 0, "r-000042: REJECTED: rejected by tester: no", &outpostv1.RejectRolloutRequest{Id: "r-000042", Reason: "no"}},
		{[]string{"rollout", "abort", "r-000042", "--reason", "wrong build"}, 0, "r-000042: ABORTED: aborted: wrong build", &outpostv1.AbortRolloutRequest{Id: "r-000042", Reason: "wrong build"}},
		{[]string{"rollout", "abort", "r-999"}, 1, "abort rollout r-999: not found", &outpostv1.AbortRolloutRequest{Id: "r-999"}},
		{[]string{"rollout", "validate", "r-000042"}, 2, "give exactly one of --accept and --reject", nil},
		{[]string{"rollout", "validate", "r-000042", "--accept", "--reject"}, 2, "give exactly one of --accept and --reject", nil},
		{[]string{"rollout", "pause"}, 2, "rollout pause takes one ROLLOUT_ID", nil},
	}
	for _, tt := range tests {
		before := len(verbRequests())
		code, out, errOut := f.run(t, tt.args...)
		calls := verbRequests()
		got := out + errOut
		if code != tt.code || !strings.Contains(got, tt.want) {
			t.Errorf("outpost %q: exit %d, output %q; want exit %d containing %q", tt.args, code, got, tt.code, tt.want)
		}
		if tt.req == nil {
			if len(calls) != before {
				t.Errorf("outpost %q called the control plane", tt.args)
			}
			continue
		}
		if len(calls) != before+1 {
			t.Errorf("outpost %q: %d calls, want 1", tt.args, len(calls)-before)
			continue
		}
		sent := proto.Clone(calls[before])
		rid := sent.ProtoReflect().Descriptor().Fields().ByName("request_id")
		if sent.ProtoReflect().Get(rid).String() == "" {
			t.Errorf("outpost %q sent no request_id", tt.args)
		}
		sent.ProtoReflect().Clear(rid)
		if !proto.Equal(sent, tt.req) {
			t.Errorf("outpost %q sent %v, want %v", tt.args, sent, tt.req)
		}
	}
}

func TestRolloutVerbsHaveHelpAndExamples(t *testing.T) {
	for _, verb := range []string{"pause", "resume", "abort", "promote", "retry", "approve", "reject", "validate", "history", "undo"} {
		code, out, _ := runCLI(t, nil, "rollout", verb, "--help")
		if code != 0 || !strings.Contains(out, "Usage: outpost rollout "+verb) || !strings.Contains(out, "Example") {
			t.Errorf("rollout %s --help: exit %d:\n%s", verb, code, out)
		}
	}
	_, out, _ := runCLI(t, nil, "rollout", "--help")
	for _, verb := range []string{"pause", "undo", "history", "validate"} {
		if !strings.Contains(out, "  "+verb+" ") {
			t.Errorf("rollout --help does not list %s:\n%s", verb, out)
		}
	}
}

func TestRolloutHistory(t *testing.T) {
	f := startFake(t)
	for i, st := range []outpostv1.RolloutState{
		outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
	} {
		f.addRollout(&outpostv1.Rollout{
			Id: []string{"r-1", "r-2", "r-3"}[i], App: "billing-api", Revision: int64(i + 1), ReleaseId: []string{"r1-aaaa", "r2-bbbb", "r1-aaaa"}[i],
			State: st, Requester: "alice", CreateTime: timestamppb.New(sampleRollout().GetCreateTime().AsTime()),
			SourceRevision: []int64{0, 0, 1}[i],
		})
	}
	code, out, errOut := f.run(t, "rollout", "history", "billing-api")
	want := `REVISION  ROLLOUT  RELEASE  STATE      CREATED               REQUESTER  NOTE
3         r-3      r1-aaaa  ABORTED    2026-05-04T09:30:00Z  alice      undo to 1
2         r-2      r2-bbbb  SUCCEEDED  2026-05-04T09:30:00Z  alice      current
1         r-1      r1-aaaa  SUCCEEDED  2026-05-04T09:30:00Z  alice      
`
	if code != 0 || out != want {
		t.Errorf("rollout history: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	code, out, _ = f.run(t, "rollout", "history", "billing-api", "--limit", "1", "-o", "json")
	if code != 0 || !strings.Contains(out, `"revision": "3"`) || strings.Contains(out, `"revision": "2"`) {
		t.Errorf("rollout history --limit 1 -o json: exit %d:\n%s", code, out)
	}
	if code, _, errOut := f.run(t, "rollout", "history"); code != 2 || !strings.Contains(errOut, "one APP") {
		t.Errorf("rollout history without app: exit %d, %q", code, errOut)
	}
}

func TestRolloutUndoSendsUndo(t *testing.T) {
	f := startFake(t)
	code, _, errOut := f.run(t, "rollout", "undo", "billing-api", "--to-revision", "3", "--dry-run")
	// The fake knows no undo: it refuses, and the verb explains.
	if code != 1 || !strings.Contains(errOut, "undo billing-api: not possible now") {
		t.Errorf("rollout undo: exit %d, stderr %q", code, errOut)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) != 1 {
		t.Fatalf("%d CreateRollout calls, want 1", len(f.creates))
	}
	req := f.creates[0]
	if u := req.GetUndo(); u.GetApp() != "billing-api" || u.GetToRevision() != 3 || !req.GetDryRun() || req.GetPlan() != nil || req.GetRequestId() == "" {
		t.Errorf("sent %v", req)
	}
	if code, _, errOut := runCLI(t, nil, "rollout", "undo", "a", "--to-revision", "-1"); code != 2 || !strings.Contains(errOut, "must not be negative") {
		t.Errorf("negative revision: exit %d, %q", code, errOut)
	}
}

func TestWriteDryRunListsEveryNode(t *testing.T) {
	var ids []string
	for i := range 12 {
		ids = append(ids, "srv-"+string(rune('a'+i)))
	}
	r := &outpostv1.Rollout{
		App: "billing-api", Artifact: &outpostv1.Artifact{Name: "a.tar.gz", Size: 2048}, ReleaseId: "r2-x", SourceRevision: 2,
		State:     outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL,
		BlueGreen: &outpostv1.BlueGreen{TargetColor: "green", LiveColor: "blue"},
		Stages: []*outpostv1.Stage{
			{Name: "green", MaxFailPercent: 10, ManualPause: true, Batches: []*outpostv1.Batch{{Index: 0, NodeIds: ids}}},
			{Name: "switch", Kind: outpostv1.StageKind_STAGE_KIND_SWITCH, Batches: []*outpostv1.Batch{{Index: 0, NodeIds: []string{"lb-1"}}}},
		},
	}
	var b strings.Builder
	if err := writeDryRun(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Undo:     back to revision 2 (release r2-x)",
		"Traffic:  deploy green, then switch to it (serving now: blue)",
		"Start:    waits for approval by someone else",
		"Stage 1: green (deploy 12 node(s); max fail 10%, manual pause)",
		"  batch 1 of 1 (12): " + strings.Join(ids, " ") + "\n",
		"Stage 2: switch (traffic switch on 1 node(s); max fail 0%)\n  batch 1 of 1 (1): lb-1\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, b.String())
		}
	}
}

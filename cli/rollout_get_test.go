package cli

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

var t0 = time.Date(2026, 5, 4, 9, 30, 0, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

// sampleRollout is a fixed rollout in the middle of its second stage.
func sampleRollout() *outpostv1.Rollout {
	return &outpostv1.Rollout{
		Id:       "r-000042",
		App:      "billing-api",
		Revision: 7,
		Plan:     &outpostv1.PlanSpec{App: "billing-api", Environment: "prod", ChangeId: "SR-2026-1142"},
		Artifact: &outpostv1.Artifact{Sha256: strings.Repeat("1a2b3c4d", 8), Size: 5 << 20, Name: "billing-api-1.4.2.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
			Signature: &outpostv1.ArtifactSignature{Bundle: []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`), Signer: "ci-release"}},
		ReleaseId: "r7-1a2b3c4d",
		State:     outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
		Message:   "stage rest: batch 2 of 3",
		Stages: []*outpostv1.Stage{
			{
				Name: "canary", State: outpostv1.StageState_STAGE_STATE_SUCCEEDED, CurrentBatch: 0,
				Batches:    []*outpostv1.Batch{{Index: 0, NodeIds: []string{"srv-0001"}}},
				NodeCounts: &outpostv1.NodeCounts{Total: 1, Succeeded: 1}, MaxFailPercent: 0,
				Bake: durationpb.New(2 * time.Minute), ManualPause: true,
			},
			{
				Name: "rest", State: outpostv1.StageState_STAGE_STATE_RUNNING, CurrentBatch: 1, MaxFailPercent: 10, MaxParallel: 2,
				Batches: []*outpostv1.Batch{
					{Index: 0, NodeIds: []string{"srv-0002", "srv-0003", "srv-0004"}},
					{Index: 1, NodeIds: []string{"srv-0005", "srv-0006", "srv-0007"}},
					{Index: 2, NodeIds: []string{"srv-0008", "srv-0009", "srv-0010", "srv-0011", "srv-0012", "srv-0013", "srv-0014", "srv-0015"}},
				},
				NodeCounts: &outpostv1.NodeCounts{Total: 14, Succeeded: 3, Running: 2, Pending: 8, RolledBack: 1},
			},
		},
		NodeCounts:   &outpostv1.NodeCounts{Total: 15, Succeeded: 4, Running: 2, Pending: 8, RolledBack: 1},
		CreateTime:   ts(0),
		UpdateTime:   ts(95 * time.Second),
		Requester:    "alice",
		Approver:     "bob",
		CurrentStage: 1,
		TraceId:      "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func TestRolloutGetGolden(t *testing.T) {
	f := startFake(t)
	f.addRollout(sampleRollout())
	for _, tt := range []struct{ format, file string }{
		{"table", "rollout_get.golden"},
		{"yaml", "rollout_get_yaml.golden"},
	} {
		code, out, errOut := f.run(t, "rollout", "get", "r-000042", "-o", tt.format)
		if code != 0 {
			t.Fatalf("rollout get -o %s: exit %d, stderr %q", tt.format, code, errOut)
		}
		golden(t, tt.file, out)
	}
}

func TestRolloutGetErrors(t *testing.T) {
	f := startFake(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no id", []string{"rollout", "get"}, 2, "takes one ROLLOUT_ID"},
		{"not found", []string{"rollout", "get", "r-9"}, 1, `get rollout r-9: not found: rollout "r-9" not found`},
		{"bad format", []string{"rollout", "get", "r-9", "-o", "xml"}, 2, `invalid argument "xml" for "-o, --output" flag: want one of table, wide, json, yaml`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := f.run(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and stderr containing %q", code, errOut, tt.code, tt.stderr)
			}
		})
	}
}

func TestUnreachableControlPlane(t *testing.T) {
	f := startFake(t)
	addr := f.addr
	code, _, errOut := runCLI(t, map[string]string{controlPlaneEnv: closedAddr(t)}, "rollout", "get", "r-1")
	want := "is not reachable (is `outpost controlplane` or `outpost dev` running?)"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("unreachable control plane: exit %d, stderr %q, want exit 1 and %q", code, errOut, want)
	}
	// --controlplane wins over the environment.
	f.addRollout(sampleRollout())
	code, _, errOut = runCLI(t, map[string]string{controlPlaneEnv: closedAddr(t)}, "rollout", "get", "r-000042", "--controlplane", addr)
	if code != 0 {
		t.Errorf("--controlplane %s: exit %d, stderr %q", addr, code, errOut)
	}
}

// hostKeyMismatchError is TrustNodeHostKey's answer to a wrong fingerprint.
func hostKeyMismatchError() error {
	st := status.New(codes.FailedPrecondition, "fingerprint SHA256:aaa does not match the key node n presented when scanned (ssh-ed25519 SHA256:bbb); nothing was pinned")
	st, err := st.WithDetails(&errdetails.ErrorInfo{Reason: hostKeyMismatch, Domain: "outpost.v1"})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestExplainCodes(t *testing.T) {
	c := &client{addr: "127.0.0.1:7443"}
	tests := []struct {
		err  error
		want string
	}{
		{status.Error(codes.InvalidArgument, "strategy.batch: must be a count or a percentage"), "create rollout: rejected: strategy.batch: must be a count or a percentage"},
		{status.Error(codes.FailedPrecondition, "rollout is not paused"), "create rollout: not possible now: rollout is not paused"},
		{status.Error(codes.DeadlineExceeded, "x"), "create rollout: control plane at 127.0.0.1:7443 did not answer in time"},
		{status.Error(codes.Unimplemented, "x"), "create rollout: the control plane at 127.0.0.1:7443 does not support this call (is it an older version?)"},
		{status.Error(codes.Unavailable, "no leader elected yet"), "create rollout: control plane at 127.0.0.1:7443 is not reachable (is `outpost controlplane` or `outpost dev` running?): no leader elected yet"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7443: connect: connection refused"`),
			"create rollout: control plane at 127.0.0.1:7443 is not reachable (is `outpost controlplane` or `outpost dev` running?)"},
		{badRequest(), "create rollout: rejected: plan is invalid\n  strategy.batch: must be a count or a percentage\n  health.timeout: bad duration"},
		{errors.New("boom"), "create rollout: boom"},
		{hostKeyMismatchError(), "create rollout: host key fingerprint does not match: fingerprint SHA256:aaa does not match the key node n presented when scanned (ssh-ed25519 SHA256:bbb); nothing was pinned"},
	}
	for _, tt := range tests {
		if got := c.explain("create rollout", tt.err).Error(); got != tt.want {
			t.Errorf("explain(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func badRequest() error {
	st, err := status.New(codes.InvalidArgument, "plan is invalid").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "strategy.batch", Description: "must be a count or a percentage"},
			{Field: "health.timeout", Description: "bad duration"},
		},
	})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

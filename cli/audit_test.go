package cli

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fakeAudit is an in-memory AuditService on loopback.
type fakeAudit struct {
	outpostv1.UnimplementedAuditServiceServer
	addr string

	mu      sync.Mutex
	entries []*outpostv1.AuditEntry // guarded by mu
	lists   []*outpostv1.ListAuditEntriesRequest
	watches []*outpostv1.WatchAuditEntriesRequest
	// live receives entries appended while watches run.
	live chan *outpostv1.AuditEntry
	// breakFirstWatch ends the first watch with UNAVAILABLE after it sent
	// the stored entries.
	breakFirstWatch bool
}

func startFakeAudit(t *testing.T, entries ...*outpostv1.AuditEntry) *fakeAudit {
	t.Helper()
	f := &fakeAudit{entries: entries, live: make(chan *outpostv1.AuditEntry, 10)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer()
	outpostv1.RegisterAuditServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	f.addr = lis.Addr().String()
	return f
}

func (f *fakeAudit) match(e *outpostv1.AuditEntry, rollout string, since *timestamppb.Timestamp, after int64) bool {
	return (rollout == "" || e.GetRolloutId() == rollout) &&
		(since == nil || !e.GetTime().AsTime().Before(since.AsTime())) && e.GetSequence() > after
}

func (f *fakeAudit) ListAuditEntries(_ context.Context, req *outpostv1.ListAuditEntriesRequest) (*outpostv1.ListAuditEntriesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req)
	var all []*outpostv1.AuditEntry
	for _, e := range f.entries {
		if f.match(e, req.GetRolloutId(), req.GetSince(), 0) {
			all = append(all, e)
		}
	}
	page, next, err := paginate(len(all), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &outpostv1.ListAuditEntriesResponse{Entries: all[page[0]:page[1]], NextPageToken: next}, nil
}

func (f *fakeAudit) WatchAuditEntries(req *outpostv1.WatchAuditEntriesRequest, stream grpc.ServerStreamingServer[outpostv1.WatchAuditEntriesResponse]) error {
	f.mu.Lock()
	n := len(f.watches)
	f.watches = append(f.watches, proto.CloneOf(req))
	var stored []*outpostv1.AuditEntry
	if req.GetSince() != nil || req.GetAfterSequence() > 0 {
		for _, e := range f.entries {
			if f.match(e, req.GetRolloutId(), req.GetSince(), req.GetAfterSequence()) {
				stored = append(stored, e)
			}
		}
	}
	breakIt := n == 0 && f.breakFirstWatch
	f.mu.Unlock()
	for _, e := range stored {
		if err := stream.Send(&outpostv1.WatchAuditEntriesResponse{Entry: e}); err != nil {
			return err
		}
	}
	if breakIt {
		return status.Error(codes.Unavailable, "control plane shutting down")
	}
	for {
		select {
		case e := <-f.live:
			f.mu.Lock()
			f.entries = append(f.entries, e)
			f.mu.Unlock()
			if err := stream.Send(&outpostv1.WatchAuditEntriesResponse{Entry: e}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

var auditT0 = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func sampleAudit() []*outpostv1.AuditEntry {
	user := outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER
	return []*outpostv1.AuditEntry{
		{Sequence: 1, Time: timestamppb.New(auditT0), Actor: "alice", ActorKind: user, Role: outpostv1.Role_ROLE_DEPLOYER,
			Action: outpostv1.ControlPlaneService_CreateRollout_FullMethodName, Resource: "rollouts/r-000042", RolloutId: "r-000042",
			PeerAddress: "10.1.2.3:51234", Result: "OK", RequestId: "req-1"},
		{Sequence: 2, Time: timestamppb.New(auditT0.Add(time.Minute)), Actor: "alice", ActorKind: user, Role: outpostv1.Role_ROLE_DEPLOYER,
			Action: outpostv1.ControlPlaneService_ApproveRollout_FullMethodName, Resource: "rollouts/r-000042", RolloutId: "r-000042",
			Result: "PERMISSION_DENIED", Message: "requires role approver (or admin);\nalice has role deployer"},
		{Sequence: 3, Time: timestamppb.New(auditT0.Add(2 * time.Minute)), Actor: "cp-1", ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM,
			Action: "rollout.state", Resource: "rollouts/r-000042", RolloutId: "r-000042", Result: "OK", Message: "APPROVED -> RUNNING"},
		{Sequence: 4, Time: timestamppb.New(auditT0.Add(3 * time.Minute)), Actor: "gw-seoul", ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY,
			Action: "node.step", Resource: "nodes/srv-0001", RolloutId: "r-000042", NodeId: "srv-0001", Result: "FAILED",
			Message: "health failed: GET /health: 503"},
		{Sequence: 5, Time: timestamppb.New(auditT0.Add(4 * time.Minute)), ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_ANONYMOUS,
			Action: outpostv1.GatewayService_JoinGateway_FullMethodName, Resource: "gateways/gw-9", Result: "PERMISSION_DENIED",
			Message: "join token is not valid"},
		{Sequence: 6, Time: timestamppb.New(auditT0.Add(5 * time.Minute)), Actor: "bob", ActorKind: user, Role: outpostv1.Role_ROLE_ADMIN,
			Action: outpostv1.ControlPlaneService_PauseRollout_FullMethodName, Resource: "rollouts/r-7", RolloutId: "r-7", Result: "OK"},
	}
}

func TestAudit(t *testing.T) {
	f := startFakeAudit(t, sampleAudit()...)
	env := map[string]string{controlPlaneEnv: f.addr}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"audit", "--since", "0"}, `TIME                  ACTOR     ROLE      ACTION          RESOURCE           RESULT             MESSAGE
2026-03-01T09:30:00Z  alice     deployer  CreateRollout   rollouts/r-000042  OK                 -
2026-03-01T09:31:00Z  alice     deployer  ApproveRollout  rollouts/r-000042  PERMISSION_DENIED  requires role approver (or admin); alice has role deployer
2026-03-01T09:32:00Z  cp-1      system    rollout.state   rollouts/r-000042  OK                 APPROVED -> RUNNING
2026-03-01T09:33:00Z  gw-seoul  gateway   node.step       nodes/srv-0001     FAILED             health failed: GET /health: 503
2026-03-01T09:34:00Z  -         -         JoinGateway     gateways/gw-9      PERMISSION_DENIED  join token is not valid
2026-03-01T09:35:00Z  bob       admin     PauseRollout    rollouts/r-7       OK                 -
`},
		// --rollout without --since reads the whole log; --limit keeps the newest.
		{[]string{"audit", "--rollout", "r-000042", "--limit", "2"}, `TIME                  ACTOR     ROLE     ACTION         RESOURCE           RESULT  MESSAGE
2026-03-01T09:32:00Z  cp-1      system   rollout.state  rollouts/r-000042  OK      APPROVED -> RUNNING
2026-03-01T09:33:00Z  gw-seoul  gateway  node.step      nodes/srv-0001     FAILED  health failed: GET /health: 503
`},
		{[]string{"audit", "--since", "2026-03-01T09:35:00Z", "-o", "json"},
			`{"time":"2026-03-01T09:35:00Z","sequence":"6","actor":"bob","actorKind":"AUDIT_ACTOR_KIND_USER","role":"ROLE_ADMIN","action":"/outpost.v1.ControlPlaneService/PauseRollout","resource":"rollouts/r-7","rolloutId":"r-7","result":"OK"}` + "\n"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, env, tt.args...)
		if code != 0 || out != tt.want {
			t.Errorf("outpost %q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tt.args, code, errOut, out, tt.want)
		}
	}

	// The default window is the last day: nothing in the samples.
	code, out, errOut := runCLI(t, env, "audit")
	if code != 0 || out != "" || errOut != "no audit entries\n" {
		t.Errorf("outpost audit: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	f.mu.Lock()
	last := f.lists[len(f.lists)-1]
	f.mu.Unlock()
	if since := time.Since(last.GetSince().AsTime()); since < 23*time.Hour || since > 25*time.Hour {
		t.Errorf("default --since asked for entries since %v ago, want 24h", since)
	}

	for _, args := range [][]string{
		{"audit", "extra"},
		{"audit", "--since", "yesterday"},
		{"audit", "--since", "-1h"},
		{"audit", "--limit", "-1"},
		{"audit", "--follow", "--limit", "3"},
		{"audit", "-o", "text"},
	} {
		if code, _, _ := runCLI(t, env, args...); code != 2 {
			t.Errorf("outpost %q: exit %d, want 2", args, code)
		}
	}
}

func TestAuditFollow(t *testing.T) {
	old := watchRetry
	watchRetry = retryPolicy{attempts: 3, min: time.Millisecond, max: 4 * time.Millisecond}
	t.Cleanup(func() { watchRetry = old })

	f := startFakeAudit(t, sampleAudit()...)
	f.breakFirstWatch = true
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"audit", "--follow", "--rollout", "r-000042", "--since", "2026-03-01T09:31:00Z"}, &Env{
			Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
			Getenv: func(k string) string { return map[string]string{controlPlaneEnv: f.addr}[k] },
		})
	}()
	live := &outpostv1.AuditEntry{Sequence: 7, Time: timestamppb.New(auditT0.Add(10 * time.Minute)), Actor: "cp-1",
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM, Action: "rollout.state", Resource: "rollouts/r-000042",
		RolloutId: "r-000042", Result: "OK", Message: "RUNNING -> FAILED_ROLLED_BACK"}
	// The first watch breaks after the stored entries; the second resumes
	// after the last one printed and then gets the live entry.
	for i := 0; ; i++ {
		f.mu.Lock()
		n := len(f.watches)
		f.mu.Unlock()
		if n == 2 {
			break
		}
		if i == 500 {
			t.Fatalf("follow did not reconnect in 5s; stderr %q", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.live <- live
	for i := 0; !strings.Contains(out.String(), "FAILED_ROLLED_BACK"); i++ {
		if i == 500 {
			t.Fatalf("live entry not printed in 5s; stdout:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("follow exited %d after interrupt, want 0; stderr %q", code, errOut.String())
	}
	want := `TIME                  ACTOR           ROLE      ACTION                  RESOURCE                  RESULT               MESSAGE
2026-03-01T09:31:00Z  alice           deployer  ApproveRollout          rollouts/r-000042         PERMISSION_DENIED    requires role approver (or admin); alice has role deployer
2026-03-01T09:32:00Z  cp-1            system    rollout.state           rollouts/r-000042         OK                   APPROVED -> RUNNING
2026-03-01T09:33:00Z  gw-seoul        gateway   node.step               nodes/srv-0001            FAILED               health failed: GET /health: 503
2026-03-01T09:40:00Z  cp-1            system    rollout.state           rollouts/r-000042         OK                   RUNNING -> FAILED_ROLLED_BACK
`
	if got := out.String(); got != want {
		t.Errorf("follow printed:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(errOut.String(), "reconnecting") {
		t.Errorf("stderr lacks the reconnect notice: %q", errOut.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resume := f.watches[1]
	if resume.GetAfterSequence() != 4 || !resume.GetSince().AsTime().Equal(auditT0.Add(3*time.Minute)) || resume.GetRolloutId() != "r-000042" {
		t.Errorf("resumed watch = %v, want after sequence 4 since its time, same rollout", resume)
	}
}

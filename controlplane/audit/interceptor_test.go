package audit_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Secrets the test puts into requests; none may reach etcd.
var secrets = []string{"hunter2-label-password", "s3cr3t-hook-value", "XYZSECRETHOOK", "TOPSECRETJOINTOKEN", "pem-private-bits"}

// stubAPI answers just enough of the control plane's services.
type stubAPI struct {
	outpostv1.UnimplementedControlPlaneServiceServer
	outpostv1.UnimplementedArtifactServiceServer
	outpostv1.UnimplementedGatewayServiceServer
}

func (stubAPI) ApplyNodes(_ context.Context, req *outpostv1.ApplyNodesRequest) (*outpostv1.ApplyNodesResponse, error) {
	return &outpostv1.ApplyNodesResponse{Nodes: req.GetNodes(), Created: int32(len(req.GetNodes()))}, nil
}

func (stubAPI) GetRollout(_ context.Context, req *outpostv1.GetRolloutRequest) (*outpostv1.GetRolloutResponse, error) {
	return &outpostv1.GetRolloutResponse{Rollout: &outpostv1.Rollout{Id: req.GetId()}}, nil
}

func (stubAPI) PauseRollout(_ context.Context, req *outpostv1.PauseRolloutRequest) (*outpostv1.PauseRolloutResponse, error) {
	if req.GetId() == "r-done" {
		return nil, status.Error(codes.FailedPrecondition, "rollout r-done is SUCCEEDED: cannot pause")
	}
	return &outpostv1.PauseRolloutResponse{Rollout: &outpostv1.Rollout{Id: req.GetId(), State: outpostv1.RolloutState_ROLLOUT_STATE_PAUSED}}, nil
}

func (stubAPI) CreateRollout(_ context.Context, req *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	if req.GetPlan().GetEnvironment() == "broken" {
		return nil, status.Errorf(codes.InvalidArgument, "notify.webhook: %s answered 404", req.GetPlan().GetNotify().GetWebhook())
	}
	return &outpostv1.CreateRolloutResponse{Rollout: &outpostv1.Rollout{
		Id: "r-000042", App: req.GetPlan().GetApp(), Revision: 7, ReleaseId: "r7-1a2b3c4d",
		State: outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL, Plan: req.GetPlan(),
	}}, nil
}

func (stubAPI) UploadArtifact(stream grpc.ClientStreamingServer[outpostv1.UploadArtifactRequest, outpostv1.UploadArtifactResponse]) error {
	var h *outpostv1.UploadArtifactHeader
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetHeader() != nil {
			h = m.GetHeader()
		}
	}
	return stream.SendAndClose(&outpostv1.UploadArtifactResponse{Artifact: &outpostv1.Artifact{Sha256: h.GetSha256()}})
}

func (stubAPI) JoinGateway(context.Context, *outpostv1.JoinGatewayRequest) (*outpostv1.JoinGatewayResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "join token is not valid")
}

// tlsPair starts a CA and returns the server's TLS config and a client
// config for id (no client certificate when id.Name is "").
func tlsPair(t *testing.T, ids ...pki.Identity) (*tls.Config, []*tls.Config) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*tls.Config
	for _, id := range ids {
		if id.Name == "" {
			c, err := pki.ClientTLSConfigForCA(ca.CertPEM(), "")
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			continue
		}
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.IssueClient(id, key.Public(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		data, err := pki.EncodeCredential(ca.CertPEM(), certPEM, key, "")
		if err != nil {
			t.Fatal(err)
		}
		cred, err := pki.ParseCredential(data)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, pki.ClientTLSConfig(cred, ""))
	}
	return pki.ServerTLSConfig(ca, srvCert), clients
}

// serve starts a gRPC server with the audit interceptors over TLS on
// loopback and returns its address.
func serve(t *testing.T, l *audit.Log, serverTLS *tls.Config, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(serverTLS)),
		grpc.ChainUnaryInterceptor(l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(l.StreamServerInterceptor()),
	)
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

func dialTLS(t *testing.T, addr string, c *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(c)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestInterceptor(t *testing.T) {
	s := storetest.Open(t)
	l := openLog(t, s, audit.Config{})
	serverTLS, clients := tlsPair(t,
		pki.Identity{Name: "alice", Kind: pki.KindUser, Role: pki.RoleAdmin},
		pki.Identity{}, // anonymous: trusts the server, has no certificate
	)
	addr := serve(t, l, serverTLS, func(srv *grpc.Server) {
		outpostv1.RegisterControlPlaneServiceServer(srv, stubAPI{})
		outpostv1.RegisterArtifactServiceServer(srv, stubAPI{})
		outpostv1.RegisterGatewayServiceServer(srv, stubAPI{})
	})
	alice := dialTLS(t, addr, clients[0])
	anon := dialTLS(t, addr, clients[1])
	cp := outpostv1.NewControlPlaneServiceClient(alice)
	ctx := ctxT(t)

	mustCall := func(err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Fatalf("call = %v, want code %v", err, want)
		}
	}
	_, err := cp.ApplyNodes(ctx, &outpostv1.ApplyNodesRequest{RequestId: "req-1", Nodes: []*outpostv1.Node{{
		Id: "srv-1", Address: "10.0.0.1:22", Datacenter: "seoul-1",
		Labels: map[string]string{"password": secrets[0]},
	}}})
	mustCall(err, codes.OK)
	_, err = cp.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r-1"})
	mustCall(err, codes.OK)
	_, err = cp.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: "r-1", RequestId: "req-2", Reason: "maintenance window"})
	mustCall(err, codes.OK)
	_, err = cp.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: "r-done", RequestId: "req-3"})
	mustCall(err, codes.FailedPrecondition)
	plan := &outpostv1.PlanSpec{
		App: "billing-api", Environment: "prod", ChangeId: "SR-2026-1142",
		Hooks:  &outpostv1.Hooks{Start: "PASSWORD=" + secrets[1] + " sh bin/start"},
		Notify: &outpostv1.PlanNotify{Webhook: "https://hooks.example.internal/services/T0/B0/" + secrets[2]},
	}
	_, err = cp.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{Plan: plan, ArtifactSha256: "ab12", RequestId: "req-4"})
	mustCall(err, codes.OK)
	plan.Environment = "broken"
	_, err = cp.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{Plan: plan, ArtifactSha256: "ab12", RequestId: "req-5"})
	mustCall(err, codes.InvalidArgument)

	up, err := outpostv1.NewArtifactServiceClient(alice).UploadArtifact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*outpostv1.UploadArtifactRequest{
		{Payload: &outpostv1.UploadArtifactRequest_Header{Header: &outpostv1.UploadArtifactHeader{Name: "app.tar.gz", Size: 5, Sha256: "cafe"}}},
		{Payload: &outpostv1.UploadArtifactRequest_Chunk{Chunk: []byte("hello")}},
	} {
		if err := up.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	_, err = up.CloseAndRecv()
	mustCall(err, codes.OK)

	_, err = outpostv1.NewGatewayServiceClient(anon).JoinGateway(ctx, &outpostv1.JoinGatewayRequest{
		Token: "opjt_" + secrets[3] + ".fp", Name: "gw-9", CsrPem: secrets[4]})
	mustCall(err, codes.PermissionDenied)

	// Every call waited for its entry: no flush needed.
	got := listAll(t, l, audit.Query{}, 100)
	user := func(e *outpostv1.AuditEntry) *outpostv1.AuditEntry {
		e.Actor, e.ActorKind, e.Role = "alice", outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER, outpostv1.Role_ROLE_ADMIN
		return e
	}
	want := []*outpostv1.AuditEntry{
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ControlPlaneService_ApplyNodes_FullMethodName, Resource: "nodes/srv-1", NodeId: "srv-1",
			RequestId: "req-1", Result: "OK",
			Details: map[string]string{"node_ids": "srv-1", "nodes": "1", "created": "1", "updated": "0", "unchanged": "0"},
		}),
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ControlPlaneService_PauseRollout_FullMethodName, Resource: "rollouts/r-1", RolloutId: "r-1",
			RequestId: "req-2", Result: "OK",
			Details: map[string]string{"reason": "maintenance window", "state": "PAUSED"},
		}),
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ControlPlaneService_PauseRollout_FullMethodName, Resource: "rollouts/r-done", RolloutId: "r-done",
			RequestId: "req-3", Result: "FAILED_PRECONDITION", Message: "rollout r-done is SUCCEEDED: cannot pause",
		}),
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ControlPlaneService_CreateRollout_FullMethodName, Resource: "rollouts/r-000042", RolloutId: "r-000042",
			RequestId: "req-4", Result: "OK",
			Details: map[string]string{"app": "billing-api", "environment": "prod", "change_id": "SR-2026-1142",
				"artifact_sha256": "ab12", "revision": "7", "release": "r7-1a2b3c4d", "state": "PENDING_APPROVAL"},
		}),
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ControlPlaneService_CreateRollout_FullMethodName, RequestId: "req-5", Result: "INVALID_ARGUMENT",
			Message: "notify.webhook: https://hooks.example.internal/… answered 404",
			Details: map[string]string{"app": "billing-api", "environment": "broken", "change_id": "SR-2026-1142", "artifact_sha256": "ab12"},
		}),
		user(&outpostv1.AuditEntry{
			Action: outpostv1.ArtifactService_UploadArtifact_FullMethodName, Resource: "artifacts/cafe", Result: "OK",
			Details: map[string]string{"name": "app.tar.gz", "size": "5"},
		}),
		{
			ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_ANONYMOUS,
			Action:    outpostv1.GatewayService_JoinGateway_FullMethodName, Resource: "gateways/gw-9",
			Result: "PERMISSION_DENIED", Message: "join token is not valid",
		},
	}
	opts := cmp.Options{protocmp.Transform(), protocmp.IgnoreFields(&outpostv1.AuditEntry{}, "time", "sequence", "peer_address", "previous_hash", "hash")}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("audit entries (-want +got):\n%s", diff)
	}
	checkOrder(t, got, 1)
	for _, e := range got {
		if !strings.HasPrefix(e.GetPeerAddress(), "127.0.0.1:") {
			t.Errorf("%s: peer address %q, want the client's 127.0.0.1:port", e.GetAction(), e.GetPeerAddress())
		}
	}

	// Nothing secret reached etcd, in any form.
	resp, err := s.Client().Get(ctx, store.AuditPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(want) {
		t.Errorf("%d stored entries, want %d", len(resp.Kvs), len(want))
	}
	for _, kv := range resp.Kvs {
		for _, secret := range secrets {
			if strings.Contains(string(kv.Key)+string(kv.Value), secret) {
				t.Errorf("stored entry %s contains the secret %q", kv.Key, secret)
			}
		}
	}
}

// TestInterceptorInsideAuth uses FromPKI, as when the audit interceptor
// runs after an authorization interceptor that put the caller into ctx.
func TestInterceptorInsideAuth(t *testing.T) {
	s := storetest.Open(t)
	type callerKey struct{}
	identity := audit.FromPKI(func(ctx context.Context) (pki.Identity, bool) {
		id, ok := ctx.Value(callerKey{}).(pki.Identity)
		return id, ok
	})
	l := openLog(t, s, audit.Config{Identity: identity})
	authz := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(context.WithValue(ctx, callerKey{}, pki.Identity{Name: "bob", Kind: pki.KindUser, Role: pki.RoleApprover}), req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(authz, l.UnaryServerInterceptor()))
	outpostv1.RegisterControlPlaneServiceServer(srv, stubAPI{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-done
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := ctxT(t)
	if _, err := outpostv1.NewControlPlaneServiceClient(cc).PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: "r-7"}); err != nil {
		t.Fatal(err)
	}
	got := listAll(t, l, audit.Query{}, 10)
	if len(got) != 1 || got[0].GetActor() != "bob" || got[0].GetRole() != outpostv1.Role_ROLE_APPROVER ||
		got[0].GetActorKind() != outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER {
		t.Errorf("entries = %v, want one by bob (approver)", got)
	}
}

package auth_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestNoCredentialIsUnauthenticated(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	conn := e.anonymous()
	cp := outpostv1.NewControlPlaneServiceClient(conn)

	_, err := cp.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r-1"})
	wantCode(t, "GetRollout", e.recordErr(err), codes.Unauthenticated, "no client certificate")
	_, err = cp.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{})
	wantCode(t, "CreateRollout", e.recordErr(err), codes.Unauthenticated)
	_, err = outpostv1.NewAdminServiceClient(conn).CreateJoinToken(ctx, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc"})
	wantCode(t, "CreateJoinToken", e.recordErr(err), codes.Unauthenticated)
	w, err := cp.WatchRollout(ctx, &outpostv1.WatchRolloutRequest{Id: "r-1"})
	if err == nil {
		_, err = w.Recv()
	}
	wantCode(t, "WatchRollout", e.recordErr(err), codes.Unauthenticated)
	wantCode(t, "FetchArtifact", e.recordErr(fetch(ctx, conn)), codes.Unauthenticated)
	_, err = outpostv1.NewGatewayServiceClient(conn).RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{})
	wantCode(t, "RenewGatewayCertificate", e.recordErr(err), codes.Unauthenticated)
	if n := e.stub.count(); n != 0 {
		t.Errorf("%d calls without a credential reached a handler", n)
	}

	// Health checks and joining need no credential.
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	wantCode(t, "Health.Check", err, codes.OK)
	_, err = outpostv1.NewGatewayServiceClient(conn).JoinGateway(ctx, &outpostv1.JoinGatewayRequest{Token: "", Name: "gw", CsrPem: csr(t, e)})
	wantCode(t, "JoinGateway without token", e.recordErr(err), codes.Unauthenticated, "token")
}

// csr returns a CSR for a new key registered as a secret.
func csr(t *testing.T, e *env) string {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.addSecretKey(key)
	b, err := pki.CreateCSR(key, "x")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	conns := map[pki.Role]*grpc.ClientConn{}
	for _, r := range []pki.Role{pki.RoleViewer, pki.RoleDeployer, pki.RoleApprover, pki.RoleAdmin} {
		conns[r] = e.user(r.String()+"-user", r)
	}
	type call func(*grpc.ClientConn) error
	get := func(c *grpc.ClientConn) error {
		_, err := outpostv1.NewControlPlaneServiceClient(c).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r-1"})
		return err
	}
	create := func(c *grpc.ClientConn) error {
		_, err := outpostv1.NewControlPlaneServiceClient(c).CreateRollout(ctx, &outpostv1.CreateRolloutRequest{})
		return err
	}
	approve := func(c *grpc.ClientConn) error {
		_, err := outpostv1.NewControlPlaneServiceClient(c).ApproveRollout(ctx, &outpostv1.ApproveRolloutRequest{Id: "r-1"})
		return err
	}
	apply := func(c *grpc.ClientConn) error {
		_, err := outpostv1.NewControlPlaneServiceClient(c).ApplyNodes(ctx, &outpostv1.ApplyNodesRequest{})
		return err
	}
	watch := func(c *grpc.ClientConn) error {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := outpostv1.NewControlPlaneServiceClient(c).WatchRollout(wctx, &outpostv1.WatchRolloutRequest{Id: "r-1"})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	token := func(c *grpc.ClientConn) error {
		resp, err := outpostv1.NewAdminServiceClient(c).CreateJoinToken(ctx, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc"})
		if err == nil {
			e.addSecret(resp.GetToken())
		}
		return err
	}
	connect := func(c *grpc.ClientConn) error {
		s, err := outpostv1.NewGatewayServiceClient(c).Connect(ctx)
		if err != nil {
			return err
		}
		defer s.CloseSend()
		_, err = s.Recv()
		return err
	}
	fetchCall := func(c *grpc.ClientConn) error { return fetch(ctx, c) }

	for _, tc := range []struct {
		name string
		role pki.Role
		call call
		want codes.Code
		msg  []string
	}{
		{"viewer get", pki.RoleViewer, get, codes.OK, nil},
		{"viewer watch", pki.RoleViewer, watch, codes.OK, nil},
		{"viewer create", pki.RoleViewer, create, codes.PermissionDenied, []string{"requires role deployer", "has role viewer", "CreateRollout"}},
		{"viewer approve", pki.RoleViewer, approve, codes.PermissionDenied, []string{"requires role approver"}},
		{"deployer create", pki.RoleDeployer, create, codes.OK, nil},
		{"deployer approve", pki.RoleDeployer, approve, codes.PermissionDenied, []string{"requires role approver", "has role deployer"}},
		{"deployer apply nodes", pki.RoleDeployer, apply, codes.PermissionDenied, []string{"requires role admin"}},
		{"approver approve", pki.RoleApprover, approve, codes.OK, nil},
		{"approver create", pki.RoleApprover, create, codes.PermissionDenied, []string{"requires role deployer"}},
		{"approver token", pki.RoleApprover, token, codes.PermissionDenied, []string{"requires role admin"}},
		{"admin get", pki.RoleAdmin, get, codes.OK, nil},
		{"admin create", pki.RoleAdmin, create, codes.OK, nil},
		{"admin approve", pki.RoleAdmin, approve, codes.OK, nil},
		{"admin apply nodes", pki.RoleAdmin, apply, codes.OK, nil},
		{"admin token", pki.RoleAdmin, token, codes.OK, nil},
		{"admin connect", pki.RoleAdmin, connect, codes.PermissionDenied, []string{"for gateways only"}},
		{"viewer connect", pki.RoleViewer, connect, codes.PermissionDenied, []string{"for gateways only"}},
		{"admin fetch artifact", pki.RoleAdmin, fetchCall, codes.PermissionDenied, []string{"for gateways only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.stub.count()
			err := e.recordErr(tc.call(conns[tc.role]))
			wantCode(t, tc.name, err, tc.want, tc.msg...)
			id, n := e.stub.last()
			switch {
			case tc.want == codes.OK && tc.name != "admin token":
				want := pki.Identity{Kind: pki.KindUser, Name: tc.role.String() + "-user", Role: tc.role}
				if n != before+1 || id != want {
					t.Errorf("handler saw %+v (calls %d -> %d), want %+v", id, before, n, want)
				}
			case tc.want != codes.OK && n != before:
				t.Errorf("a refused call reached the handler")
			}
		})
	}
}

func TestGatewayCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	gwID := pki.Identity{Kind: pki.KindGateway, Name: "gw-seoul", Datacenter: "seoul-1"}
	conn := e.as(e.credential(gwID, time.Hour))

	_, err := outpostv1.NewControlPlaneServiceClient(conn).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
	wantCode(t, "gateway GetRollout", e.recordErr(err), codes.PermissionDenied, "requires a user with role viewer", "gateway/gw-seoul")
	_, err = outpostv1.NewAdminServiceClient(conn).CreateJoinToken(ctx, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1"})
	wantCode(t, "gateway CreateJoinToken", e.recordErr(err), codes.PermissionDenied)

	if err := fetch(ctx, conn); err != nil {
		t.Fatalf("gateway FetchArtifact: %v", err)
	}
	if id, _ := e.stub.last(); id != gwID {
		t.Errorf("FetchArtifact handler saw %+v, want %+v (with its datacenter)", id, gwID)
	}

	hello := func(name, dc string) error {
		s, err := outpostv1.NewGatewayServiceClient(conn).Connect(ctx)
		if err != nil {
			return err
		}
		defer s.CloseSend()
		if err := s.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Hello{Hello: &outpostv1.GatewayHello{Name: name, Datacenter: dc}}}); err != nil {
			return err
		}
		resp, err := s.Recv()
		if err == nil && resp.GetWelcome() == nil {
			t.Errorf("first message %v, want welcome", resp)
		}
		return err
	}
	wantCode(t, "Connect as itself", hello("gw-seoul", "seoul-1"), codes.OK)
	wantCode(t, "Connect claiming another datacenter", e.recordErr(hello("gw-seoul", "busan-1")), codes.PermissionDenied, "seoul-1")
	wantCode(t, "Connect claiming another name", e.recordErr(hello("gw-busan", "seoul-1")), codes.PermissionDenied, "gw-busan")
}

func TestCheckGateway(t *testing.T) {
	ctx := auth.NewContext(context.Background(), pki.Identity{Kind: pki.KindGateway, Name: "g", Datacenter: "d"})
	if err := auth.CheckGateway(ctx, "g", "d"); err != nil {
		t.Errorf("CheckGateway(own name and dc) = %v", err)
	}
	for _, tc := range []struct {
		ctx      context.Context
		name, dc string
	}{
		{ctx, "g", "other"},
		{ctx, "other", "d"},
		{context.Background(), "g", "d"},
		{auth.NewContext(context.Background(), pki.Identity{Kind: pki.KindUser, Name: "g", Role: pki.RoleAdmin}), "g", ""},
	} {
		wantCode(t, "CheckGateway("+tc.name+", "+tc.dc+")", auth.CheckGateway(tc.ctx, tc.name, tc.dc), codes.PermissionDenied)
	}
}

func TestExpiredCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)

	t.Run("by the authority's clock", func(t *testing.T) {
		conn := e.user("soon-expired", pki.RoleViewer)
		get := func() error {
			_, err := outpostv1.NewControlPlaneServiceClient(conn).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
			return e.recordErr(err)
		}
		wantCode(t, "before expiry", get(), codes.OK)
		e.clock.Advance(2 * time.Hour)
		defer e.clock.Advance(-2 * time.Hour)
		wantCode(t, "after expiry", get(), codes.Unauthenticated, "expired")
	})
	t.Run("refused by TLS", func(t *testing.T) {
		// Issued four minutes ago for two: expired in real time too.
		old := *e.ca
		old.Now = func() time.Time { return time.Now().Add(-4 * time.Minute) }
		key, _ := pki.GenerateKey()
		e.addSecretKey(key)
		certPEM, err := old.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "stale", Role: pki.RoleAdmin}, key.Public(), 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		conn := e.as(e.parseCred(certPEM, key))
		before := e.stub.count()
		_, err = outpostv1.NewControlPlaneServiceClient(conn).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
		if e.recordErr(err) == nil {
			t.Fatal("a call with an expired certificate succeeded")
		}
		if e.stub.count() != before {
			t.Error("a call with an expired certificate reached the handler")
		}
	})
}

// TestUnverifiedCertificateRefused checks the interceptor does not trust a
// certificate TLS did not verify (a misconfigured server), nor a plaintext
// connection.
func TestUnverifiedCertificateRefused(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	serverCert, err := e.ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lax := pki.ServerTLSConfig(e.ca, serverCert)
	lax.ClientAuth = tls.RequireAnyClientCert // verifies nothing

	for name, creds := range map[string]credentials.TransportCredentials{
		"unverified TLS": credentials.NewTLS(lax),
		"plaintext":      insecure.NewCredentials(),
	} {
		t.Run(name, func(t *testing.T) {
			srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(e.auth.UnaryInterceptor()))
			outpostv1.RegisterControlPlaneServiceServer(srv, e.stub)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); srv.Serve(lis) }()
			defer func() { srv.Stop(); <-done }()

			// A credential from another CA that claims to be an admin.
			other, err := pki.LoadOrCreateCA(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			key, _ := pki.GenerateKey()
			e.addSecretKey(key)
			certPEM, err := other.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "mallory", Role: pki.RoleAdmin}, key.Public(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			data, err := pki.EncodeCredential(other.CertPEM(), certPEM, key, "")
			if err != nil {
				t.Fatal(err)
			}
			forged, err := pki.ParseCredential(data)
			if err != nil {
				t.Fatal(err)
			}
			clientCfg := pki.ClientTLSConfig(forged, "")
			clientCfg.RootCAs = e.ca.Pool()
			clientCfg.Certificates = nil
			clientCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged.Certificate, nil }
			dialCreds := credentials.NewTLS(clientCfg)
			if name == "plaintext" {
				dialCreds = insecure.NewCredentials()
			}
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(dialCreds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			before := e.stub.count()
			_, err = outpostv1.NewControlPlaneServiceClient(conn).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
			wantCode(t, name, e.recordErr(err), codes.Unauthenticated)
			if e.stub.count() != before {
				t.Error("the call reached the handler")
			}
		})
	}
}

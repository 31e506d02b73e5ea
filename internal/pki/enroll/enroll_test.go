package enroll_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gateways is a GatewayService with the real join and renew calls and a
// FetchArtifact that answers with the caller's identity.
type gateways struct {
	outpostv1.UnimplementedGatewayServiceServer
	join *auth.JoinServer
}

func (g *gateways) JoinGateway(ctx context.Context, req *outpostv1.JoinGatewayRequest) (*outpostv1.JoinGatewayResponse, error) {
	return g.join.JoinGateway(ctx, req)
}

func (g *gateways) RenewGatewayCertificate(ctx context.Context, req *outpostv1.RenewGatewayCertificateRequest) (*outpostv1.RenewGatewayCertificateResponse, error) {
	return g.join.RenewGatewayCertificate(ctx, req)
}

func (g *gateways) FetchArtifact(_ *outpostv1.FetchArtifactRequest, s grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	id, _ := auth.FromContext(s.Context())
	return s.Send(&outpostv1.FetchArtifactResponse{Artifact: &outpostv1.Artifact{Name: id.String()}})
}

type rollouts struct {
	outpostv1.UnimplementedControlPlaneServiceServer
}

func (rollouts) GetRollout(ctx context.Context, _ *outpostv1.GetRolloutRequest) (*outpostv1.GetRolloutResponse, error) {
	id, _ := auth.FromContext(ctx)
	return &outpostv1.GetRolloutResponse{Rollout: &outpostv1.Rollout{Id: id.String()}}, nil
}

// server starts a control plane's auth and API on loopback.
func server(t *testing.T) (*auth.Authority, string, *syncBuffer) {
	t.Helper()
	st := storetest.Open(t)
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := auth.New(ctx, auth.Config{Store: st, CA: ca, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	cert, err := ca.IssueServer(auth.ServerHosts("127.0.0.1:0"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLSConfig(ca, cert))),
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()), grpc.ChainStreamInterceptor(a.StreamInterceptor()))
	outpostv1.RegisterGatewayServiceServer(srv, &gateways{join: a.JoinServer()})
	outpostv1.RegisterControlPlaneServiceServer(srv, rollouts{})
	outpostv1.RegisterAdminServiceServer(srv, a.AdminServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return a, lis.Addr().String(), logs
}

// whoAmI calls FetchArtifact and returns the identity the server saw.
func whoAmI(ctx context.Context, t *testing.T, conn *grpc.ClientConn) (string, error) {
	t.Helper()
	s, err := outpostv1.NewGatewayServiceClient(conn).FetchArtifact(ctx, &outpostv1.FetchArtifactRequest{Sha256: "ab"})
	if err != nil {
		return "", err
	}
	m, err := s.Recv()
	return m.GetArtifact().GetName(), err
}

func dial(t *testing.T, addr string, cred *pki.Credential) *grpc.ClientConn {
	t.Helper()
	conn, err := enroll.Dial(addr, cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestGatewayJoinRestartRenew(t *testing.T) {
	a, addr, logs := server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	token, _, err := a.Tokens().Create(ctx, auth.TokenSpec{Datacenter: "seoul-1"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.pem")
	var errs []string
	note := func(err error) error {
		if err != nil {
			errs = append(errs, err.Error())
		}
		return err
	}

	// First start: no credential, a token: join.
	cred, joined, err := enroll.LoadOrJoin(ctx, path, addr, "gw-1", token, time.Now())
	if err != nil || !joined {
		t.Fatalf("first LoadOrJoin = joined %v, %v", joined, err)
	}
	if want := (pki.Identity{Kind: pki.KindGateway, Name: "gw-1", Datacenter: "seoul-1"}); cred.Identity != want || cred.Server != addr {
		t.Errorf("credential %+v server %q", cred.Identity, cred.Server)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credential file: %v, %v", fi, err)
	}
	if who, err := whoAmI(ctx, t, dial(t, addr, cred)); err != nil || who != "gateway/gw-1 (dc seoul-1)" {
		t.Errorf("server saw %q, %v", who, err)
	}

	// Restart: the file is used; the (used) token is not needed.
	again, joined, err := enroll.LoadOrJoin(ctx, path, addr, "gw-1", token, time.Now())
	if err != nil || joined || !again.Leaf().Equal(cred.Leaf()) {
		t.Errorf("restart LoadOrJoin = joined %v, %v; want the stored credential", joined, note(err))
	}
	if _, _, err := enroll.LoadOrJoin(ctx, path, addr, "gw-2", "", time.Now()); note(err) == nil {
		t.Error("LoadOrJoin accepted a credential of another gateway name")
	}

	// Renewal.
	renewed, err := enroll.Renew(ctx, outpostv1.NewGatewayServiceClient(dial(t, addr, cred)), addr)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if renewed.Identity != cred.Identity || renewed.Leaf().SerialNumber.Cmp(cred.Leaf().SerialNumber) == 0 {
		t.Errorf("renewed %+v serial %s", renewed.Identity, pki.SerialString(renewed.Leaf()))
	}
	if _, err := whoAmI(ctx, t, dial(t, addr, renewed)); err != nil {
		t.Errorf("renewed credential's call: %v", err)
	}

	// Expired, and only the used token: refused, and told why.
	_, _, err = enroll.LoadOrJoin(ctx, path, addr, "gw-1", token, time.Now().Add(48*time.Hour))
	if status.Code(errors.Unwrap(note(err))) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Errorf("LoadOrJoin(expired, used token) = %v, want Unauthenticated: already used", err)
	}
	_, _, err = enroll.LoadOrJoin(ctx, filepath.Join(t.TempDir(), "none.pem"), addr, "gw-3", "", time.Now())
	if !errors.Is(note(err), enroll.ErrNeedToken) {
		t.Errorf("LoadOrJoin without file or token = %v, want ErrNeedToken", err)
	}
	if _, err := enroll.Join(ctx, addr, "opjt_garbage", "gw-4"); note(err) == nil {
		t.Error("Join with a malformed token succeeded")
	}

	// Secrets: the token's secret part and the gateway key's lines.
	secretLines := []string{strings.SplitN(strings.TrimPrefix(token, pki.JoinTokenPrefix), ".", 2)[0]}
	keyFile, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(keyFile), "-----BEGIN PRIVATE KEY-----\n")
	block, _, _ = strings.Cut(block, "-----END PRIVATE KEY-----")
	secretLines = append(secretLines, strings.Fields(block)...)
	if len(secretLines) < 3 {
		t.Fatalf("found %d secrets to look for", len(secretLines))
	}
	for _, s := range secretLines {
		if strings.Contains(logs.String(), s) {
			t.Error("a secret appears in the server's logs")
		}
		for _, e := range errs {
			if strings.Contains(e, s) {
				t.Errorf("a secret appears in an error: %q", e)
			}
		}
	}
}

func TestCreateUser(t *testing.T) {
	a, addr, _ := server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	adminPath := filepath.Join(dir, auth.AdminCredentialFile)
	if _, err := a.EnsureAdminCredential(ctx, adminPath, addr); err != nil {
		t.Fatal(err)
	}
	admin, err := pki.LoadCredential(adminPath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "alice.pem")
	cred, err := enroll.CreateUser(ctx, outpostv1.NewAdminServiceClient(dial(t, admin.Server, admin)), "alice", pki.RoleViewer, 24*time.Hour, path, addr)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	loaded, err := pki.LoadCredential(path)
	if err != nil || loaded.Identity != cred.Identity || loaded.Server != addr {
		t.Fatalf("LoadCredential(%s) = %+v, %v", path, loaded, err)
	}
	resp, err := outpostv1.NewControlPlaneServiceClient(dial(t, loaded.Server, loaded)).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
	if err != nil || resp.GetRollout().GetId() != "user/alice (viewer)" {
		t.Errorf("alice's GetRollout = %v, %v", resp, err)
	}
	// A viewer cannot create users.
	_, err = enroll.CreateUser(ctx, outpostv1.NewAdminServiceClient(dial(t, addr, loaded)), "mallory", pki.RoleAdmin, 0, filepath.Join(dir, "m.pem"), addr)
	if status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
		t.Errorf("viewer's CreateUser = %v, want PermissionDenied", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "m.pem")); err == nil {
		t.Error("a refused CreateUser wrote a file")
	}
	if _, err := enroll.CreateUser(ctx, outpostv1.NewAdminServiceClient(dial(t, addr, admin)), "x", pki.RoleUnspecified, 0, filepath.Join(dir, "x.pem"), addr); err == nil {
		t.Error("CreateUser with no role succeeded")
	}
}

package auth_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
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
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for the Authority.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
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

// env is a control plane in miniature: real etcd, real TLS, real gRPC on
// loopback, the Authority's interceptors, and stub services that record
// who called them.
type env struct {
	t     *testing.T
	clock *clock
	ca    *pki.CA
	store *store.Store
	auth  *auth.Authority
	addr  string
	logs  *syncBuffer
	stub  *stub

	mu      sync.Mutex // guards secrets and errs
	secrets []string   // must never appear in logs or errors
	errs    []string   // every error a client saw
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := storetest.Open(t)
	return newEnvOn(t, st, t.TempDir())
}

// newEnvOn starts an env on an existing store and CA directory, as a
// second control plane replica would.
func newEnvOn(t *testing.T, st *store.Store, caDir string) *env {
	t.Helper()
	e := &env{t: t, store: st, logs: &syncBuffer{}, clock: &clock{now: time.Now()}}
	ca, err := pki.LoadOrCreateCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	e.ca = ca
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	e.addSecretPEM(caKey)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := auth.New(ctx, auth.Config{Store: st, CA: ca, Logger: logger, Now: e.clock.Now})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	e.auth = a
	t.Cleanup(a.Close)
	t.Cleanup(e.checkSecrets) // runs after the server stopped: logs are complete

	serverCert, err := ca.IssueServer([]string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := pki.ServerTLSConfig(ca, serverCert)
	// The handshake checks validity with the real clock; the Authority's
	// clock moves independently so tests can expire things.
	tlsCfg.Time = time.Now
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamInterceptor()),
	)
	e.stub = &stub{join: a.JoinServer()}
	outpostv1.RegisterControlPlaneServiceServer(srv, e.stub)
	outpostv1.RegisterGatewayServiceServer(srv, &gatewayStub{stub: e.stub})
	outpostv1.RegisterAdminServiceServer(srv, a.AdminServer())
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return e
}

func (e *env) addSecret(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
}

// addSecretPEM registers the base64 lines of a PEM block as secrets.
func (e *env) addSecretPEM(p []byte) {
	b, _ := pem.Decode(p)
	if b == nil {
		e.t.Fatal("addSecretPEM: no PEM")
	}
	for _, line := range strings.Split(string(pem.EncodeToMemory(&pem.Block{Type: "K", Bytes: b.Bytes})), "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			e.addSecret(line)
		}
	}
}

// addSecretKey registers a private key as a secret.
func (e *env) addSecretKey(key crypto.Signer) {
	e.t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.addSecretPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b}))
}

func (e *env) recordErr(err error) error {
	if err != nil {
		e.mu.Lock()
		e.errs = append(e.errs, err.Error())
		e.mu.Unlock()
	}
	return err
}

// checkSecrets fails the test if a token or key appears in a log line or
// an error a client saw.
func (e *env) checkSecrets() {
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.secrets) == 0 {
		e.t.Error("no secrets registered: the leak check checks nothing")
	}
	for i, s := range e.secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("secret #%d appears in the logs", i)
		}
		for _, msg := range e.errs {
			if strings.Contains(msg, s) {
				e.t.Errorf("secret #%d appears in an error a client saw", i)
			}
		}
	}
	if len(e.errs) == 0 && len(logs) == 0 {
		e.t.Error("no errors or logs captured: the leak check checks nothing")
	}
}

// dial returns a client connection with the given TLS config.
func (e *env) dial(cfg *tls.Config) *grpc.ClientConn {
	e.t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// anonymous returns a connection that trusts the server but presents no
// certificate.
func (e *env) anonymous() *grpc.ClientConn {
	e.t.Helper()
	cfg, err := pki.ClientTLSConfigForCA(e.ca.CertPEM(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return e.dial(cfg)
}

// credential issues (and records) a credential for id.
func (e *env) credential(id pki.Identity, ttl time.Duration) *pki.Credential {
	e.t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	e.addSecretKey(key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	certPEM, _, err := e.auth.IssueCredential(ctx, id, key.Public(), ttl, "test")
	if err != nil {
		e.t.Fatalf("IssueCredential(%v): %v", id, err)
	}
	return e.parseCred(certPEM, key)
}

func (e *env) parseCred(certPEM []byte, key crypto.Signer) *pki.Credential {
	e.t.Helper()
	data, err := pki.EncodeCredential(e.ca.CertPEM(), certPEM, key, "")
	if err != nil {
		e.t.Fatal(err)
	}
	cred, err := pki.ParseCredential(data)
	if err != nil {
		e.t.Fatal(err)
	}
	return cred
}

// as returns a connection authenticated by cred.
func (e *env) as(cred *pki.Credential) *grpc.ClientConn {
	e.t.Helper()
	return e.dial(pki.ClientTLSConfig(cred, ""))
}

// user returns a connection of a new user with role.
func (e *env) user(name string, role pki.Role) *grpc.ClientConn {
	e.t.Helper()
	return e.as(e.credential(pki.Identity{Kind: pki.KindUser, Name: name, Role: role}, time.Hour))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err has code want and, when want is not OK, its
// message contains every fragment.
func wantCode(t *testing.T, what string, err error, want codes.Code, fragments ...string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, want)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(status.Convert(err).Message(), f) {
			t.Errorf("%s: message %q does not contain %q", what, status.Convert(err).Message(), f)
		}
	}
}

// stub implements the API methods the tests call and records callers.
type stub struct {
	outpostv1.UnimplementedControlPlaneServiceServer
	join *auth.JoinServer

	mu      sync.Mutex // guards callers
	callers []pki.Identity
}

func (s *stub) record(ctx context.Context) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		id = pki.Identity{Name: "<none>"}
	}
	s.mu.Lock()
	s.callers = append(s.callers, id)
	s.mu.Unlock()
}

// last returns the identity of the latest call that reached a handler.
func (s *stub) last() (pki.Identity, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.callers) == 0 {
		return pki.Identity{}, 0
	}
	return s.callers[len(s.callers)-1], len(s.callers)
}

func (s *stub) count() int {
	_, n := s.last()
	return n
}

func (s *stub) GetRollout(ctx context.Context, req *outpostv1.GetRolloutRequest) (*outpostv1.GetRolloutResponse, error) {
	s.record(ctx)
	return &outpostv1.GetRolloutResponse{Rollout: &outpostv1.Rollout{Id: req.GetId()}}, nil
}

func (s *stub) CreateRollout(ctx context.Context, _ *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	s.record(ctx)
	return &outpostv1.CreateRolloutResponse{Rollout: &outpostv1.Rollout{Id: "r-1"}}, nil
}

func (s *stub) ApproveRollout(ctx context.Context, _ *outpostv1.ApproveRolloutRequest) (*outpostv1.ApproveRolloutResponse, error) {
	s.record(ctx)
	return &outpostv1.ApproveRolloutResponse{}, nil
}

func (s *stub) ApplyNodes(ctx context.Context, _ *outpostv1.ApplyNodesRequest) (*outpostv1.ApplyNodesResponse, error) {
	s.record(ctx)
	return &outpostv1.ApplyNodesResponse{}, nil
}

// WatchRollout sends one message, then holds the stream until the client
// or the server ends it.
func (s *stub) WatchRollout(req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
	s.record(stream.Context())
	if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: 1}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// gatewayStub is the GatewayService: Connect and FetchArtifact are stubs,
// JoinGateway and RenewGatewayCertificate the real ones.
type gatewayStub struct {
	outpostv1.UnimplementedGatewayServiceServer
	stub *stub
}

func (g *gatewayStub) Connect(stream grpc.BidiStreamingServer[outpostv1.ConnectRequest, outpostv1.ConnectResponse]) error {
	g.stub.record(stream.Context())
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := msg.GetHello()
	if err := auth.CheckGateway(stream.Context(), hello.GetName(), hello.GetDatacenter()); err != nil {
		return err
	}
	if err := stream.Send(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Welcome{Welcome: &outpostv1.GatewayWelcome{Epoch: 1}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (g *gatewayStub) FetchArtifact(req *outpostv1.FetchArtifactRequest, stream grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	g.stub.record(stream.Context())
	return stream.Send(&outpostv1.FetchArtifactResponse{Artifact: &outpostv1.Artifact{Sha256: req.GetSha256()}})
}

func (g *gatewayStub) JoinGateway(ctx context.Context, req *outpostv1.JoinGatewayRequest) (*outpostv1.JoinGatewayResponse, error) {
	return g.stub.join.JoinGateway(ctx, req)
}

func (g *gatewayStub) RenewGatewayCertificate(ctx context.Context, req *outpostv1.RenewGatewayCertificateRequest) (*outpostv1.RenewGatewayCertificateResponse, error) {
	return g.stub.join.RenewGatewayCertificate(ctx, req)
}

// fetch calls FetchArtifact and reads its first message.
func fetch(ctx context.Context, conn *grpc.ClientConn) error {
	s, err := outpostv1.NewGatewayServiceClient(conn).FetchArtifact(ctx, &outpostv1.FetchArtifactRequest{Sha256: "ab"})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// copyCA writes ca's files into dir, as an operator sharing one CA
// between control plane replicas would.
func copyCA(t *testing.T, ca *pki.CA, dir string) {
	t.Helper()
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
}

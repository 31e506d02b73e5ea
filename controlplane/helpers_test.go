package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in these tests; generous for a loaded machine.
const waitLimit = 20 * time.Second

// testLogger logs warnings (debug with OUTPOST_TEST_DEBUG=1) to stderr;
// not t.Log, since etcd may log after a test ends.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("OUTPOST_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type cpOption func(*Config)

func withTracer(tp trace.TracerProvider) cpOption { return func(c *Config) { c.TracerProvider = tp } }

// startCP starts a control plane on a loopback port with its data in dir
// and shuts it down when the test ends (unless the test did).
func startCP(t testing.TB, dir string, opts ...cpOption) *Server {
	t.Helper()
	cfg := Config{
		Listen:            "127.0.0.1:0",
		DataDir:           dir,
		ReplicaName:       "cp-test",
		Logger:            testLogger(),
		heartbeatInterval: time.Second,
		GatewayGrace:      2 * time.Second,
		LeaderTTL:         2 * time.Second,
		refuseBackoff:     20 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	cred, err := pki.LoadCredential(s.AdminCredentialFile())
	if err != nil {
		t.Fatalf("admin credential: %v", err)
	}
	admins.Store(s.Addr(), cred)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

// admins holds the admin credential of every control plane startCP
// started, by address, for dial.
var admins sync.Map // string -> *pki.Credential

// client is a real gRPC client of a control plane: an admin for the
// people's APIs, and a gateway named "probe" in dc1 (joined on first use)
// for GatewayService.
type client struct {
	outpostv1.ControlPlaneServiceClient
	outpostv1.ArtifactServiceClient
	outpostv1.AdminServiceClient
	outpostv1.GatewayServiceClient
	conn *grpc.ClientConn
}

// dial connects to the control plane at addr (started by startCP) with
// its admin credential.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	v, ok := admins.Load(addr)
	if !ok {
		t.Fatalf("dial %s: no admin credential (not started by startCP)", addr)
	}
	conn, err := enroll.Dial(addr, v.(*pki.Credential))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{
		ControlPlaneServiceClient: outpostv1.NewControlPlaneServiceClient(conn),
		ArtifactServiceClient:     outpostv1.NewArtifactServiceClient(conn),
		AdminServiceClient:        outpostv1.NewAdminServiceClient(conn),
		GatewayServiceClient:      &lazyGatewayClient{t: t, addr: addr, name: "probe", dc: "dc1"},
		conn:                      conn,
	}
}

// gatewayCred joins the control plane at addr as gateway name of dc, with
// a join token its admin creates for that name.
func gatewayCred(t testing.TB, addr, name, dc string) *pki.Credential {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	resp, err := dial(t, addr).CreateJoinToken(ctx, &outpostv1.CreateJoinTokenRequest{Datacenter: dc, GatewayName: name})
	if err != nil {
		t.Fatalf("join token for gateway %s: %v", name, err)
	}
	cred, err := enroll.Join(ctx, addr, resp.GetToken(), name)
	if err != nil {
		t.Fatalf("join as gateway %s: %v", name, err)
	}
	return cred
}

// lazyGatewayClient joins as a gateway on its first call.
type lazyGatewayClient struct {
	t              testing.TB
	addr, name, dc string
	once           sync.Once
	c              outpostv1.GatewayServiceClient
}

var _ outpostv1.GatewayServiceClient = (*lazyGatewayClient)(nil)

func (l *lazyGatewayClient) get() outpostv1.GatewayServiceClient {
	l.once.Do(func() {
		conn, err := enroll.Dial(l.addr, gatewayCred(l.t, l.addr, l.name, l.dc))
		if err != nil {
			l.t.Fatalf("dial as gateway: %v", err)
		}
		l.t.Cleanup(func() { conn.Close() })
		l.c = outpostv1.NewGatewayServiceClient(conn)
	})
	return l.c
}

func (l *lazyGatewayClient) Connect(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[outpostv1.ConnectRequest, outpostv1.ConnectResponse], error) {
	return l.get().Connect(ctx, opts...)
}

func (l *lazyGatewayClient) FetchArtifact(ctx context.Context, in *outpostv1.FetchArtifactRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[outpostv1.FetchArtifactResponse], error) {
	return l.get().FetchArtifact(ctx, in, opts...)
}

func (l *lazyGatewayClient) JoinGateway(ctx context.Context, in *outpostv1.JoinGatewayRequest, opts ...grpc.CallOption) (*outpostv1.JoinGatewayResponse, error) {
	return l.get().JoinGateway(ctx, in, opts...)
}

func (l *lazyGatewayClient) RenewGatewayCertificate(ctx context.Context, in *outpostv1.RenewGatewayCertificateRequest, opts ...grpc.CallOption) (*outpostv1.RenewGatewayCertificateResponse, error) {
	return l.get().RenewGatewayCertificate(ctx, in, opts...)
}

func (l *lazyGatewayClient) ServeHostKeyScans(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[outpostv1.ServeHostKeyScansRequest, outpostv1.ServeHostKeyScansResponse], error) {
	return l.get().ServeHostKeyScans(ctx, opts...)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// nodeID names test node i; ids sort in numeric order.
func nodeID(i int) string { return fmt.Sprintf("srv-%04d", i) }

// applyNodes adds n nodes labelled app=billing-api; dc picks each node's
// datacenter (nil: all in dc1).
func applyNodes(t testing.TB, c *client, n int, dc func(i int) string) []*outpostv1.Node {
	t.Helper()
	var nodes []*outpostv1.Node
	for i := range n {
		d := "dc1"
		if dc != nil {
			d = dc(i)
		}
		nodes = append(nodes, &outpostv1.Node{
			Id:         nodeID(i),
			Address:    fmt.Sprintf("127.0.%d.%d:22", 10+i/250, 1+i%250),
			Datacenter: d,
			User:       "deploy",
			Labels:     map[string]string{"app": "billing-api", "tier": fmt.Sprint(i%3 + 1)},
		})
	}
	if _, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: nodes}); err != nil {
		t.Fatalf("ApplyNodes: %v", err)
	}
	return nodes
}

// upload stores data as an artifact and returns its digest.
func upload(t testing.TB, c *client, name string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	stream, err := c.UploadArtifact(ctxT(t))
	if err != nil {
		t.Fatalf("UploadArtifact: %v", err)
	}
	if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Header{Header: &outpostv1.UploadArtifactHeader{
		Name: name, Size: int64(len(data)), Sha256: digest,
	}}}); err != nil {
		t.Fatalf("send header: %v", err)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Chunk{Chunk: data[off:min(off+1<<20, len(data))]}}); err != nil {
			break // the server may answer early (already present); CloseAndRecv tells
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("UploadArtifact: %v", err)
	}
	return digest
}

func ptr[T any](v T) *T { return &v }

// rollingPlan is a rolling plan over the app=billing-api nodes.
func rollingPlan(batch string, maxFail int32) *outpostv1.PlanSpec {
	return &outpostv1.PlanSpec{
		App:      "billing-api",
		Artifact: &outpostv1.PlanArtifact{Path: "./build/billing-api-1.4.2.tar.gz"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": "billing-api"}},
		Deploy:   &outpostv1.PlanDeploy{Path: "app"},
		Hooks:    &outpostv1.Hooks{Start: "sh bin/start", Stop: "sh bin/stop"},
		Health:   &outpostv1.PlanHealth{Http: &outpostv1.HttpHealthCheck{Port: 18080, Path: "/health"}},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: batch, MaxFailPercent: ptr(maxFail)},
	}
}

func createRollout(t testing.TB, c *client, spec *outpostv1.PlanSpec, digest string) *outpostv1.Rollout {
	t.Helper()
	resp, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: spec, ArtifactSha256: digest})
	if err != nil {
		t.Fatalf("CreateRollout: %v", err)
	}
	return resp.GetRollout()
}

// waitRollout polls the rollout until ok accepts it.
func waitRollout(t *testing.T, c *client, id string, what string, ok func(*outpostv1.Rollout) bool) *outpostv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	var last *outpostv1.Rollout
	for time.Now().Before(deadline) {
		resp, err := c.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
		if err == nil {
			last = resp.GetRollout()
			if ok(last) {
				return last
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rollout %s: waited for %s; last state %v, message %q, counts %v", id, what, last.GetState(), last.GetMessage(), last.GetNodeCounts())
	return nil
}

func stateIs(s outpostv1.RolloutState) func(*outpostv1.Rollout) bool {
	return func(r *outpostv1.Rollout) bool { return r.GetState() == s }
}

// rolloutNodes returns every node record of a rollout by node id.
func rolloutNodes(t *testing.T, c *client, id string) map[string]*outpostv1.RolloutNode {
	t.Helper()
	resp, err := c.ListRolloutNodes(ctxT(t), &outpostv1.ListRolloutNodesRequest{RolloutId: id, PageSize: 5000})
	if err != nil {
		t.Fatalf("ListRolloutNodes: %v", err)
	}
	out := map[string]*outpostv1.RolloutNode{}
	for _, n := range resp.GetNodes() {
		out[n.GetNodeId()] = n
	}
	return out
}

// idsOf returns the node ids of assignments, in order.
func idsOf(as []*outpostv1.Assignment) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.GetNode().GetId())
	}
	return out
}

func succeedAll(*outpostv1.Assignment) (outpostv1.NodeState, string) {
	return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
}

// withEtcd makes the replica use the etcd at endpoints (in tests, an
// embedded one reached through its plain-text unix socket) and the CA key
// sealed with the KEK in kekFile, which the replicas sharing it share.
func withEtcd(endpoints []string, kekFile string) cpOption {
	return func(c *Config) { c.EtcdEndpoints, c.EtcdInsecure, c.KEKFile = endpoints, true, kekFile }
}
func withName(name string) cpOption      { return func(c *Config) { c.ReplicaName = name } }
func withLogger(l *slog.Logger) cpOption { return func(c *Config) { c.Logger = l } }

// countingHandler counts log records by message (and forwards nothing).
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}

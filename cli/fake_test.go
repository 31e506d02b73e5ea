package cli

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// testCA signs the fake control planes' server certificate and the
// credential every client verb in these tests finds by default.
var (
	testCA         *pki.CA
	testServerCert tls.Certificate
)

func TestMain(m *testing.M) {
	// A child that a test runs as the outpost binary (completion in a real shell).
	if os.Getenv(cliChildEnv) == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "outpost-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := setUpTestPKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, "test PKI:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// newTestServer returns a gRPC server with TLS like the control plane's,
// certified by the test CA.
func newTestServer() *grpc.Server {
	return grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLSConfig(testCA, testServerCert))))
}

// setUpTestPKI makes the test CA, the fakes' server certificate and an
// admin credential, which client verbs find first among the default
// credentials (tests that run real daemons pass theirs explicitly).
func setUpTestPKI(dir string) error {
	var err error
	if testCA, err = pki.LoadOrCreateCA(filepath.Join(dir, "ca")); err != nil {
		return err
	}
	if testServerCert, err = testCA.IssueServer([]string{"127.0.0.1"}, time.Hour); err != nil {
		return err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	cert, err := testCA.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "tester", Role: pki.RoleAdmin}, key.Public(), time.Hour)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "admin.pem")
	if err := pki.WriteCredential(path, testCA.CertPEM(), cert, key, ""); err != nil {
		return err
	}
	defaultCredentials = append([]string{path}, defaultCredentials...)
	return nil
}

// fakeControlPlane is an in-memory ControlPlaneService and ArtifactService
// served over real gRPC on loopback, so verbs run exactly as against the
// real control plane. Tests program it through its fields.
type fakeControlPlane struct {
	outpostv1.UnimplementedControlPlaneServiceServer
	outpostv1.UnimplementedArtifactServiceServer

	addr string

	mu        sync.Mutex
	nodes     map[string]*outpostv1.Node // guarded by mu
	rollouts  []*outpostv1.Rollout       // newest first; guarded by mu
	artifacts map[string][]byte          // by sha256; guarded by mu
	uploads   int                        // UploadArtifact calls; guarded by mu
	creates   []*outpostv1.CreateRolloutRequest
	watches   []*outpostv1.WatchRolloutRequest
	// fail makes the named method return this error (by method name: "ListNodes").
	fail map[string]error
	// watch serves WatchRollout call number n (from 0); nil means Unimplemented.
	watch func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error
}

func startFake(t *testing.T) *fakeControlPlane {
	t.Helper()
	f := &fakeControlPlane{nodes: map[string]*outpostv1.Node{}, artifacts: map[string][]byte{}, fail: map[string]error{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer()
	outpostv1.RegisterControlPlaneServiceServer(srv, f)
	outpostv1.RegisterArtifactServiceServer(srv, f)
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

// run runs the CLI against the fake.
func (f *fakeControlPlane) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, map[string]string{controlPlaneEnv: f.addr}, args...)
}

func (f *fakeControlPlane) failing(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[method]
}

func (f *fakeControlPlane) ApplyNodes(_ context.Context, req *outpostv1.ApplyNodesRequest) (*outpostv1.ApplyNodesResponse, error) {
	if err := f.failing("ApplyNodes"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &outpostv1.ApplyNodesResponse{}
	for _, n := range req.GetNodes() {
		old, ok := f.nodes[n.GetId()]
		switch {
		case !ok:
			resp.Created++
		case proto.Equal(old, n):
			resp.Unchanged++
		default:
			resp.Updated++
		}
		f.nodes[n.GetId()] = n
		resp.Nodes = append(resp.Nodes, n)
	}
	return resp, nil
}

func (f *fakeControlPlane) ListNodes(_ context.Context, req *outpostv1.ListNodesRequest) (*outpostv1.ListNodesResponse, error) {
	if err := f.failing("ListNodes"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sel := map[string]string{}
	for _, kv := range strings.Split(req.GetLabelSelector(), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			sel[k] = v
		}
	}
	var all []*outpostv1.Node
	for _, n := range f.nodes {
		if req.GetDatacenter() != "" && n.GetDatacenter() != req.GetDatacenter() {
			continue
		}
		match := true
		for k, v := range sel {
			if n.GetLabels()[k] != v {
				match = false
			}
		}
		if match {
			all = append(all, n)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetId() < all[j].GetId() })
	page, next, err := paginate(len(all), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &outpostv1.ListNodesResponse{Nodes: all[page[0]:page[1]], NextPageToken: next}, nil
}

// paginate returns [start, end) of one page and the next token. The fake
// caps pages at 2 items so tests exercise paging.
func paginate(n int, size int32, token string) ([2]int, string, error) {
	start := 0
	if token != "" {
		s, err := strconv.Atoi(token)
		if err != nil {
			return [2]int{}, "", status.Error(codes.InvalidArgument, "bad page token")
		}
		start = s
	}
	size = min(max(size, 1), 2)
	end := min(start+int(size), n)
	next := ""
	if end < n {
		next = strconv.Itoa(end)
	}
	return [2]int{start, end}, next, nil
}

func (f *fakeControlPlane) addRollout(r *outpostv1.Rollout) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rollouts = append([]*outpostv1.Rollout{r}, f.rollouts...)
}

func (f *fakeControlPlane) GetRollout(_ context.Context, req *outpostv1.GetRolloutRequest) (*outpostv1.GetRolloutResponse, error) {
	if err := f.failing("GetRollout"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rollouts {
		if r.GetId() == req.GetId() {
			return &outpostv1.GetRolloutResponse{Rollout: r}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
}

func (f *fakeControlPlane) ListRollouts(_ context.Context, req *outpostv1.ListRolloutsRequest) (*outpostv1.ListRolloutsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []*outpostv1.Rollout
	for _, r := range f.rollouts {
		if req.GetApp() == "" || r.GetApp() == req.GetApp() {
			all = append(all, r)
		}
	}
	page, next, err := paginate(len(all), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &outpostv1.ListRolloutsResponse{Rollouts: all[page[0]:page[1]], NextPageToken: next}, nil
}

func (f *fakeControlPlane) CreateRollout(_ context.Context, req *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	if err := f.failing("CreateRollout"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	a, ok := f.artifacts[req.GetArtifactSha256()]
	if !ok && (!req.GetDryRun() || req.GetUndo() != nil) {
		// As the real one: a dry run needs only the digest.
		return nil, status.Errorf(codes.FailedPrecondition, "artifact %s is not stored", req.GetArtifactSha256())
	}
	r := &outpostv1.Rollout{
		App: req.GetPlan().GetApp(), Plan: req.GetPlan(), State: outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
		Artifact: &outpostv1.Artifact{Sha256: req.GetArtifactSha256(), Size: int64(len(a)), Name: "x.tar.gz"},
		Stages: []*outpostv1.Stage{{Name: "rolling", MaxFailPercent: 10, CurrentBatch: -1, Batches: []*outpostv1.Batch{
			{Index: 0, NodeIds: []string{"node-01", "node-02"}}, {Index: 1, NodeIds: []string{"node-03"}},
		}}},
		CurrentStage: -1,
	}
	if req.GetDryRun() {
		return &outpostv1.CreateRolloutResponse{Rollout: r}, nil
	}
	r.Id = "r-" + strconv.Itoa(100+len(f.creates))
	r.Revision = int64(len(f.creates))
	r.ReleaseId = "r" + strconv.Itoa(len(f.creates)) + "-" + req.GetArtifactSha256()[:8]
	f.rollouts = append([]*outpostv1.Rollout{r}, f.rollouts...)
	return &outpostv1.CreateRolloutResponse{Rollout: r}, nil
}

func (f *fakeControlPlane) WatchRollout(req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
	f.mu.Lock()
	n := len(f.watches)
	f.watches = append(f.watches, req)
	watch := f.watch
	f.mu.Unlock()
	if watch == nil {
		return status.Error(codes.Unimplemented, "no watch programmed")
	}
	return watch(n, req, stream)
}

func (f *fakeControlPlane) StatArtifact(_ context.Context, req *outpostv1.StatArtifactRequest) (*outpostv1.StatArtifactResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.artifacts[req.GetSha256()]
	if !ok {
		return &outpostv1.StatArtifactResponse{}, nil
	}
	return &outpostv1.StatArtifactResponse{Found: true, Artifact: &outpostv1.Artifact{Sha256: req.GetSha256(), Size: int64(len(a))}}, nil
}

func (f *fakeControlPlane) UploadArtifact(stream grpc.ClientStreamingServer[outpostv1.UploadArtifactRequest, outpostv1.UploadArtifactResponse]) error {
	f.mu.Lock()
	f.uploads++
	f.mu.Unlock()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "header first")
	}
	var data []byte
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(m.GetChunk()) > uploadChunk {
			return status.Errorf(codes.InvalidArgument, "chunk of %d bytes is over 1 MiB", len(m.GetChunk()))
		}
		data = append(data, m.GetChunk()...)
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != h.GetSize() || hex.EncodeToString(sum[:]) != h.GetSha256() {
		return status.Error(codes.InvalidArgument, "size or sha256 mismatch")
	}
	f.mu.Lock()
	f.artifacts[h.GetSha256()] = data
	f.mu.Unlock()
	return stream.SendAndClose(&outpostv1.UploadArtifactResponse{Artifact: &outpostv1.Artifact{Sha256: h.GetSha256(), Size: h.GetSize(), Name: h.GetName()}})
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

package cli

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

var (
	devAddr       = regexp.MustCompile(`(?m)^  export OUTPOST_CONTROLPLANE=(127\.0\.0\.1:\d+)$`)
	devCredential = regexp.MustCompile(`(?m)^  export OUTPOST_CREDENTIAL=(\S+)$`)
)

// TestDevSmoke runs `outpost dev` with a small fleet and deploys the first
// demo plan it wrote, through the client verbs: the generated inventory,
// artifacts and plans must work as written.
func TestDevSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a fleet, a control plane and gateways")
	}
	data := filepath.Join(t.TempDir(), "data")
	col := startCollector(t)
	d := startDaemon(t, nil, "dev", "--nodes", "3", "--datacenters", "2", "--data-dir", data, "--listen", "127.0.0.1:0",
		"--log-level", "warn", "--otel-endpoint", col.addr, "--metrics-listen", "127.0.0.1:0")
	d.out.waitFor(t, "outpost dev: ready", 90*time.Second)
	m := devAddr.FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("no control plane address in:\n%s", d.out.String())
	}
	cred := devCredential.FindStringSubmatch(d.out.String())
	if cred == nil || cred[1] != filepath.Join(data, "admin.pem") {
		t.Fatalf("no export of %s/admin.pem in:\n%s", data, d.out.String())
	}
	env := map[string]string{controlPlaneEnv: m[1], credentialEnv: cred[1]}

	for _, f := range []string{"id_ed25519", "known_hosts", "nodes.yaml", "demo/app-v1.tar.gz", "demo/app-v3.tar.gz", "demo/plan-v3.yaml"} {
		if _, err := os.Stat(filepath.Join(data, "dev", f)); err != nil {
			t.Errorf("dev file: %v", err)
		}
	}
	if st, err := os.Stat(filepath.Join(data, "dev", "id_ed25519")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("client key mode %v, want 0600", st.Mode().Perm())
	}

	code, out, errOut := runCLI(t, env, "node", "apply", "-f", filepath.Join(data, "dev", "nodes.yaml"))
	if code != 0 || out != "3 nodes: 3 created, 0 updated, 0 unchanged\n" {
		t.Fatalf("node apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "node", "list", "--datacenter", "dc-2")
	if code != 0 || !strings.Contains(out, "node-02") || strings.Contains(out, "node-01") {
		t.Errorf("dc-2 should hold node-02 only:\n%s", out)
	}
	code, out, errOut = runCLI(t, env, "rollout", "create", "-f", filepath.Join(data, "dev", "demo", "plan-v1.yaml"), "--watch")
	if code != 0 || !strings.Contains(out, "SUCCEEDED after") {
		t.Fatalf("rollout of v1: exit %d, stdout:\n%s\nstderr:\n%s\ndev log:\n%s", code, out, errOut, d.err.String())
	}
	// The gateways joined with the tokens dev made for them.
	for _, f := range []string{"gateways/dev-gateway-dc-1.pem", "gateways/dev-gateway-dc-2.pem"} {
		if st, err := os.Stat(filepath.Join(data, "dev", f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("gateway credential %s: %v", f, err)
		}
	}
	for _, h := range []string{"host-001", "host-002", "host-003"} {
		v, err := os.ReadFile(filepath.Join(data, "dev", "fleet", h, "app", "current", "VERSION"))
		if err != nil || string(v) != "v1\n" {
			t.Errorf("%s runs %q (%v), want v1", h, v, err)
		}
	}

	if code := d.stop(t); code != 0 {
		t.Errorf("dev exit %d after interrupt, want 0; stderr:\n%s", code, d.err.String())
	}
	if !strings.Contains(d.out.String(), "outpost dev: stopping") {
		t.Errorf("no stopping line:\n%s", d.out.String())
	}
	// --otel-endpoint reached both daemons: spans were flushed at shutdown.
	if n := col.spanCount(); n == 0 {
		t.Errorf("the collector received no spans")
	}
}

// collector is a minimal OTLP/gRPC trace receiver on loopback.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans int // guarded by mu
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return c
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans += len(ss.GetSpans())
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) spanCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans
}

func TestDevUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"dev", "--nodes", "0"}, "--nodes 0"},
		{[]string{"dev", "--nodes", "2", "--datacenters", "3"}, "--datacenters 3: want 1..2"},
		{[]string{"dev", "now"}, "takes no arguments"},
		{[]string{"dev", "--metrics-listen", "9464"}, "--metrics-listen: address 9464: missing port"},
		{[]string{"dev", "--metrics-listen", "127.0.0.1:65535"}, "beyond 65535"},
		{[]string{"dev", "--metrics-listen", "127.0.0.1:http"}, `port "http": want 0..65535`},
	} {
		code, _, errOut := runCLI(t, nil, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.stderr) {
			t.Errorf("outpost %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut, tt.stderr)
		}
	}
}

func TestDevMetricsAddrs(t *testing.T) {
	for _, tt := range []struct {
		listen  string
		cp      string
		gws     []string
		wantErr bool
	}{
		{"", "", nil, false},
		{"127.0.0.1:9464", "127.0.0.1:9464", []string{"127.0.0.1:9465", "127.0.0.1:9466"}, false},
		{"127.0.0.1:0", "127.0.0.1:0", []string{"127.0.0.1:0", "127.0.0.1:0"}, false},
		{"[::1]:9000", "[::1]:9000", []string{"[::1]:9001", "[::1]:9002"}, false},
		{"127.0.0.1:65534", "", nil, true},
		{"127.0.0.1:-1", "", nil, true},
		{"127.0.0.1", "", nil, true},
	} {
		cp, gws, err := devMetricsAddrs(tt.listen, 2)
		if (err != nil) != tt.wantErr || cp != tt.cp || !slices.Equal(gws, tt.gws) {
			t.Errorf("devMetricsAddrs(%q, 2) = %q, %q, %v; want %q, %q, error %v", tt.listen, cp, gws, err, tt.cp, tt.gws, tt.wantErr)
		}
	}
}

func TestDevExitsWhenTheControlPlaneFails(t *testing.T) {
	// The embedded control plane fails by itself (its etcd stopped):
	// `outpost dev` stops with that failure, exit status 1.
	failed := &fakeServer{done: make(chan struct{}), err: errors.New("controlplane: state store: embedded etcd server stopped")}
	close(failed.done)
	var out strings.Builder
	err := devUntil(context.Background(), failed, &out)
	if ee := (*exitError)(nil); !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "embedded etcd server stopped") {
		t.Errorf("devUntil(failed control plane) = %#v, want an exitError, code 1, with its failure", err)
	}
	if !strings.Contains(out.String(), "outpost dev: the control plane failed; stopping") {
		t.Errorf("output %q does not say the control plane failed", out.String())
	}
	// An interrupt: no error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.Reset()
	if err := devUntil(ctx, &fakeServer{done: make(chan struct{})}, &out); err != nil || out.String() != "outpost dev: stopping\n" {
		t.Errorf("devUntil(interrupted) = %v, output %q; want nil, the stopping line", err, out.String())
	}
}

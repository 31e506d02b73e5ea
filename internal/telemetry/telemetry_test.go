package telemetry

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// collector is a minimal OTLP/gRPC trace receiver that remembers span names.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string // guarded by mu
	svc   []string // service.name of each export, guarded by mu
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.svc = append(c.svc, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s.GetName())
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func TestExportsToLoopbackCollector(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	go srv.Serve(lis)
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tp, shutdown, err := NewTracerProvider(ctx, Service{Name: "outpost-test", Version: "v9", InstanceID: "cp-1"}, lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(ctx, "rollout")
	span.End()
	// Shutdown flushes the batcher: the span must have arrived when it returns.
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.spans) != 1 || col.spans[0] != "rollout" {
		t.Errorf("collector got spans %q, want [rollout]", col.spans)
	}
	if len(col.svc) == 0 || col.svc[0] != "outpost-test" {
		t.Errorf("collector got service names %q, want outpost-test", col.svc)
	}
}

func TestNoEndpointIsNoop(t *testing.T) {
	tp, shutdown, err := NewTracerProvider(context.Background(), Service{Name: "x"}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "s")
	if span.SpanContext().IsValid() {
		t.Errorf("no-op provider made a valid span context")
	}
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestEndpointForms(t *testing.T) {
	tests := []struct {
		endpoint string
		wantErr  bool
	}{
		{"127.0.0.1:4317", false},
		{"localhost:4317", false},
		{"collector.example.internal:4317", false},
		{"http://127.0.0.1:4317", false},
		{"https://collector.example.internal:4317", false},
		{"collector", true},
		{"ftp://x:1", true},
		{"http://", true},
	}
	for _, tt := range tests {
		_, err := exporterOptions(tt.endpoint)
		if (err != nil) != tt.wantErr {
			t.Errorf("exporterOptions(%q) error = %v, want error %v", tt.endpoint, err, tt.wantErr)
		}
	}
}

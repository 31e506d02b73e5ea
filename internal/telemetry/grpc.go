package telemetry

import (
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
)

// longLived are the RPCs that stay open as long as a gateway or a
// watcher is connected: a span per call would last for days (and be lost
// with the process), so they get none.
var longLived = []string{
	"/outpost.v1.GatewayService/Connect",
	"/outpost.v1.GatewayService/ServeHostKeyScans",
	"/outpost.v1.ControlPlaneService/WatchRollout",
	"/outpost.v1.AuditService/WatchAuditEntries",
}

func traced(info *stats.RPCTagInfo) bool {
	for _, m := range longLived {
		if strings.EqualFold(info.FullMethodName, m) {
			return false
		}
	}
	return true
}

func grpcOptions(tp trace.TracerProvider) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		// Spans only: the daemons' metrics are Prometheus collectors.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
		otelgrpc.WithFilter(traced),
	}
}

// GRPCServerHandler makes a SERVER span of every API call (but the
// long-lived streams), joining the caller's trace when it sends one.
func GRPCServerHandler(tp trace.TracerProvider) stats.Handler {
	return otelgrpc.NewServerHandler(grpcOptions(tp)...)
}

// GRPCClientHandler makes a CLIENT span of every call a gateway makes
// (but the long-lived streams) and sends its trace context along.
func GRPCClientHandler(tp trace.TracerProvider) stats.Handler {
	return otelgrpc.NewClientHandler(grpcOptions(tp)...)
}

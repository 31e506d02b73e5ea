package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// NewTracerProvider returns a provider that exports spans of service over
// OTLP/gRPC to endpoint, and the function that flushes and stops it.
//
// endpoint is "host:port" or a URL ("http://host:4317", "https://..."). The
// connection is plaintext when the scheme is http or, without a scheme,
// when the host is a loopback address (a collector on the same machine);
// otherwise it uses TLS with the system roots. An empty endpoint returns a
// no-op provider and a shutdown that does nothing.
//
// The exporter connects lazily and drops spans it cannot deliver, so an
// unreachable collector never blocks or fails the daemon.
func NewTracerProvider(ctx context.Context, service, endpoint string) (trace.TracerProvider, func(context.Context) error, error) {
	if endpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	opts, err := exporterOptions(endpoint)
	if err != nil {
		return nil, nil, err
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter for %s: %w", endpoint, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	return tp, tp.Shutdown, nil
}

// exporterOptions turns the endpoint flag into exporter options.
func exporterOptions(endpoint string) ([]otlptracegrpc.Option, error) {
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("otel endpoint %q: %w", endpoint, err)
		}
		switch u.Scheme {
		case "http", "https":
		default:
			return nil, fmt.Errorf("otel endpoint %q: scheme must be http or https", endpoint)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("otel endpoint %q: no host", endpoint)
		}
		// WithEndpointURL picks plaintext for http and TLS for https.
		return []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}, nil
	}
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, fmt.Errorf("otel endpoint %q: want host:port or a URL: %w", endpoint, err)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint)}
	if isLoopback(host) {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	return opts, nil
}

// isLoopback reports whether host names this machine, where a plaintext
// connection to a local collector is the norm.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

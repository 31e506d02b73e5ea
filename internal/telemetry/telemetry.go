package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Service names the daemon whose spans a provider exports: the resource
// attributes service.name, service.version and service.instance.id
// (host.name is added from the machine).
type Service struct {
	Name       string // "outpost-controlplane" or "outpost-gateway"
	Version    string // the build's version; "" leaves it out
	InstanceID string // the replica's or gateway's name; "": the host name
}

// Service names of the two daemons, also under `outpost dev`.
const (
	ServiceControlPlane = "outpost-controlplane"
	ServiceGateway      = "outpost-gateway"
)

// maxLinks bounds the links of one span: a batch span links to each node
// trace of the batch, so this is the largest batch whose every node is
// linked from it (the node traces link back whatever the size).
const maxLinks = 4096

// NewTracerProvider returns a provider that exports spans of svc over
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
func NewTracerProvider(ctx context.Context, svc Service, endpoint string) (trace.TracerProvider, func(context.Context) error, error) {
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
	tp := sdktrace.NewTracerProvider(ProviderOptions(svc, sdktrace.WithBatcher(exp))...)
	return tp, tp.Shutdown, nil
}

// ProviderOptions are the options of every Outpost tracer provider (the
// resource of svc, the id generator of WithRootIDs, the link limit) plus
// extra; tests build providers with their own span processors from them.
func ProviderOptions(svc Service, extra ...sdktrace.TracerProviderOption) []sdktrace.TracerProviderOption {
	limits := sdktrace.NewSpanLimits()
	limits.LinkCountLimit = maxLinks
	return append([]sdktrace.TracerProviderOption{
		sdktrace.WithResource(Resource(svc)),
		sdktrace.WithIDGenerator(newIDGenerator()),
		sdktrace.WithRawSpanLimits(limits),
	}, extra...)
}

// Resource is the OpenTelemetry resource of svc on this host.
func Resource(svc Service) *resource.Resource {
	attrs := []attribute.KeyValue{semconv.ServiceName(svc.Name)}
	if svc.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(svc.Version))
	}
	host, _ := os.Hostname()
	if host != "" {
		attrs = append(attrs, semconv.HostName(host))
	}
	if id := svc.InstanceID; id != "" || host != "" {
		if id == "" {
			id = host
		}
		attrs = append(attrs, semconv.ServiceInstanceID(id))
	}
	return resource.NewWithAttributes(semconv.SchemaURL, attrs...)
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

// CheckEndpoint reports whether endpoint is a form NewTracerProvider
// takes ("" included), so a flag is refused before anything starts.
func CheckEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	_, err := exporterOptions(endpoint)
	return err
}

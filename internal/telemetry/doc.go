// Package telemetry sets up OpenTelemetry tracing for Outpost's daemons
// and defines the Prometheus metrics both daemons export (metrics.go).
//
// A daemon builds one TracerProvider at start and passes it down in its
// Config; nothing here touches the otel globals, so two daemons in one
// process (`outpost dev`) keep their own service names. With no endpoint
// the provider is a no-op: spans cost nothing and nothing is exported.
package telemetry

// Package telemetry sets up OpenTelemetry tracing for Outpost's daemons
// and holds what both daemons must agree on, among them the Prometheus
// metrics both export (metrics.go).
//
// A daemon builds one TracerProvider at start (NewTracerProvider, with the
// resource of its Service) and passes it down in its Config; nothing here
// touches the otel globals, so two daemons in one process (`outpost dev`)
// keep their own service names. With no endpoint the provider is a no-op:
// spans cost nothing and nothing is exported.
//
// attrs.go is the one span attribute vocabulary of the control plane and
// the gateway: keys, and the one spelling of enum values (lowercase,
// without the enum prefix: "rolled_back"), also used for metric label
// values. ids.go lets a trace outlive a process: a root span can be given
// a trace id (and span id) stored in etcd (WithRootIDs). grpc.go makes
// SERVER and CLIENT spans of gRPC calls.
package telemetry

package telemetry

import (
	"context"
	"net"
	"strconv"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// The span attribute vocabulary of both daemons: one key per fact, so a
// query for outpost.node.id finds the control plane's and the gateway's
// spans of a node alike. Enum values are spelled by the Value functions
// below (lowercase, without the enum's prefix: "rolled_back", "upload"),
// the spelling the metrics' label values use too.
const (
	AttrRolloutID    = attribute.Key("outpost.rollout.id")
	AttrRolloutState = attribute.Key("outpost.rollout.state")
	AttrRevision     = attribute.Key("outpost.rollout.revision")
	AttrNodeID       = attribute.Key("outpost.node.id")
	AttrNodeState    = attribute.Key("outpost.node.state")
	AttrApp          = attribute.Key("outpost.app")
	AttrReleaseID    = attribute.Key("outpost.release.id")
	AttrDatacenter   = attribute.Key("outpost.datacenter")
	AttrGateway      = attribute.Key("outpost.gateway.name")
	AttrStage        = attribute.Key("outpost.stage")
	AttrBatch        = attribute.Key("outpost.batch")
	AttrBatchSize    = attribute.Key("outpost.batch.size")
	AttrStep         = attribute.Key("outpost.step")
	AttrStepDetail   = attribute.Key("outpost.step.detail")
	AttrAssignmentID = attribute.Key("outpost.assignment.id")
	AttrKind         = attribute.Key("outpost.assignment.kind")
	AttrArtifact     = attribute.Key("outpost.artifact.sha256")
	// AttrResumed marks a span a new leader started for work an earlier
	// leader began.
	AttrResumed = attribute.Key("outpost.resumed")
	// AttrInterrupted says why a span ended before its work did
	// ("leadership ended").
	AttrInterrupted = attribute.Key("outpost.interrupted")
)

// LogTraceID is the slog attribute that carries a node deployment's trace
// id in every log line about it, on both daemons.
const LogTraceID = "trace_id"

// NodeStateValue is s as attributes and label values spell it: "rolled_back".
func NodeStateValue(s outpostv1.NodeState) string { return EnumValue(s.String(), "NODE_STATE_") }

// RolloutStateValue is s as attributes and label values spell it: "pending_approval".
func RolloutStateValue(s outpostv1.RolloutState) string {
	return EnumValue(s.String(), "ROLLOUT_STATE_")
}

// StepValue is s as attributes and label values spell it: "upload".
func StepValue(s outpostv1.Step) string { return EnumValue(s.String(), "STEP_") }

// KindValue is k as attributes spell it: "deploy", "rollback", "run_hook".
func KindValue(k outpostv1.AssignmentKind) string {
	return EnumValue(k.String(), "ASSIGNMENT_KIND_")
}

// EnumValue is a protobuf enum value's name without prefix, lowercased.
func EnumValue(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// ServerAttrs are the semantic-convention attributes server.address and
// server.port of a CLIENT span calling address ("host:port", or a host
// alone meaning defaultPort).
func ServerAttrs(address string, defaultPort int) []attribute.KeyValue {
	host, port := address, defaultPort
	if h, p, err := net.SplitHostPort(address); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err == nil {
			port = n
		}
	}
	return []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(port)}
}

// Fail marks span failed by err: an exception event and an error status.
func Fail(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// LogArgs are the slog arguments naming the trace of ctx's span
// (LogTraceID), none when ctx has no trace.
func LogArgs(ctx context.Context) []any {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return []any{LogTraceID, sc.TraceID().String()}
	}
	return nil
}

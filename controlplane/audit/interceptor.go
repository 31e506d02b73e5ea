package audit

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// callAppendTimeout bounds how long a call waits for its entry to be
// written after the handler returned. The entry stays queued after that.
const callAppendTimeout = 5 * time.Second

// UnaryServerInterceptor records every mutating unary call (see
// Mutating) after its handler returns, and returns the handler's result
// unchanged: the call has happened, so a failed audit write is logged, not
// returned. The call waits until its entry is written (at most a few
// seconds), so a caller that saw success can find the entry.
//
// Chain it before (outside) the auth interceptors to record refused calls
// too; the default Config.Identity (PeerIdentity) names callers from their
// TLS certificate there. Chained after auth, use FromPKI(auth.FromContext).
func (l *Log) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !Mutating(info.FullMethod) {
			return handler(ctx, req)
		}
		resp, err := handler(ctx, req)
		l.recordCall(ctx, info.FullMethod, asMessage(req), asMessage(resp), err)
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams. It reads
// the request id and resource from the first message the client sent and
// the last message the server sent.
func (l *Log) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !Mutating(info.FullMethod) {
			return handler(srv, ss)
		}
		rs := &recordingStream{ServerStream: ss}
		err := handler(srv, rs)
		l.recordCall(ss.Context(), info.FullMethod, rs.first, rs.last, err)
		return err
	}
}

// recordingStream keeps the first received and the last sent message.
// gRPC allows one goroutine receiving and one sending at a time, and each
// field is touched by one side only.
type recordingStream struct {
	grpc.ServerStream
	first proto.Message // a copy: the handler may reuse its message
	last  proto.Message
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.first == nil {
		if pm := asMessage(m); pm != nil {
			s.first = proto.Clone(pm)
		}
	}
	return err
}

func (s *recordingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.last = asMessage(m)
	}
	return err
}

func asMessage(v any) proto.Message {
	m, _ := v.(proto.Message)
	return m
}

// recordCall builds the entry of one call and waits for it to be written.
func (l *Log) recordCall(ctx context.Context, method string, req, resp proto.Message, err error) {
	name, kind, role := l.cfg.Identity(ctx)
	e := &outpostv1.AuditEntry{
		Actor:       name,
		ActorKind:   actorKind(kind),
		Role:        roleOf(role),
		Action:      method,
		RequestId:   requestID(req),
		PeerAddress: peerAddress(ctx),
		Result:      resultOf(err),
	}
	if err != nil {
		e.Message = status.Convert(err).Message()
		resp = nil // a failed call's response is not its result
	}
	if r, ok := rules[method]; ok && r.describe != nil {
		r.describe(req, resp, e)
	}
	addTraceID(ctx, e)
	// The caller may be gone, but the call happened: record it anyway.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callAppendTimeout)
	defer cancel()
	if aerr := l.Append(actx, e); aerr != nil {
		l.log.Error("audit entry of a call not written yet", "method", method, "actor", name,
			"resource", e.GetResource(), "result", e.GetResult(), "err", aerr)
	}
}

// requestID reads a string field named request_id, which every mutating
// outpost.v1 request has, without knowing the message type.
func requestID(m proto.Message) string {
	if m == nil {
		return ""
	}
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("request_id")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return ""
	}
	return r.Get(fd).String()
}

func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// resultOf is "OK" or the canonical name of err's status code
// ("PERMISSION_DENIED").
func resultOf(err error) string {
	c := status.Code(err)
	if name, ok := code.Code_name[int32(c)]; ok {
		return name
	}
	return c.String()
}

func addTraceID(ctx context.Context, e *outpostv1.AuditEntry) {
	if e.GetDetails()["trace_id"] != "" {
		return // the entry names its own trace (a node deployment's)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		detail(e, "trace_id", sc.TraceID().String())
	}
}

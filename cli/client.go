package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// defaultControlPlane is where `outpost controlplane` and `outpost dev` listen by default.
	defaultControlPlane = "127.0.0.1:7443"
	// controlPlaneEnv overrides defaultControlPlane for every client verb.
	controlPlaneEnv = "OUTPOST_CONTROLPLANE"
	// callTimeout bounds one unary call, so a wedged control plane is an
	// error and not a hang. Streams (upload, watch) are not bounded.
	callTimeout = 30 * time.Second
)

// controlPlaneFlag registers --controlplane on fs, defaulting to
// $OUTPOST_CONTROLPLANE and then to defaultControlPlane.
func controlPlaneFlag(fs *flag.FlagSet, env *Env) *string {
	def := defaultControlPlane
	if v := env.Getenv(controlPlaneEnv); v != "" {
		def = v
	}
	return fs.String("controlplane", def, "control plane gRPC address `host:port` (env "+controlPlaneEnv+")")
}

// client is a connection to the control plane with both client APIs.
type client struct {
	addr string
	cc   *grpc.ClientConn
	cp   outpostv1.ControlPlaneServiceClient
	art  outpostv1.ArtifactServiceClient
}

// dial prepares a connection to addr. It does not block: gRPC connects on
// the first call, so an unreachable control plane surfaces there, as
// codes.Unavailable, which explain turns into advice.
func dial(addr string) (*client, error) {
	if addr == "" {
		return nil, usagef("--controlplane is empty")
	}
	// Plaintext for now; TLS comes with the security issue (DESIGN.md).
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("control plane address %q: %w", addr, err)
	}
	return &client{
		addr: addr,
		cc:   cc,
		cp:   outpostv1.NewControlPlaneServiceClient(cc),
		art:  outpostv1.NewArtifactServiceClient(cc),
	}, nil
}

func (c *client) Close() error { return c.cc.Close() }

// explain turns an RPC error into a sentence for people: what was being
// done, what the status code means, and the server's message. Field
// violations (errdetails.BadRequest) follow one per line. Errors that are
// not gRPC statuses pass through with the context added.
func (c *client) explain(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: interrupted", what)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := st.Message()
	var b strings.Builder
	switch st.Code() {
	case codes.Unavailable:
		fmt.Fprintf(&b, "%s: control plane at %s is not reachable (is `outpost controlplane` or `outpost dev` running?)", what, c.addr)
		// Transport messages ("dial tcp ...: connection refused") repeat
		// what the sentence says; anything else is the server's reason.
		if msg != "" && !strings.Contains(msg, "connection error") && !strings.Contains(msg, "dial") {
			fmt.Fprintf(&b, ": %s", msg)
		}
	case codes.DeadlineExceeded:
		fmt.Fprintf(&b, "%s: control plane at %s did not answer in time", what, c.addr)
	case codes.Canceled:
		fmt.Fprintf(&b, "%s: interrupted", what)
	case codes.Unimplemented:
		fmt.Fprintf(&b, "%s: the control plane at %s does not support this call (is it an older version?)", what, c.addr)
	default:
		fmt.Fprintf(&b, "%s: %s", what, codeWords(st.Code()))
		if msg != "" {
			fmt.Fprintf(&b, ": %s", msg)
		}
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
		}
	}
	return &rpcError{msg: b.String(), code: st.Code()}
}

// rpcError is an explained RPC failure; code lets callers decide (watch
// retries Unavailable, not NotFound).
type rpcError struct {
	msg  string
	code codes.Code
}

func (e *rpcError) Error() string { return e.msg }

// codeWords names a status code the way a person would.
func codeWords(c codes.Code) string {
	switch c {
	case codes.NotFound:
		return "not found"
	case codes.InvalidArgument:
		return "rejected"
	case codes.FailedPrecondition:
		return "not possible now"
	case codes.AlreadyExists:
		return "already exists"
	case codes.Aborted:
		return "conflict, try again"
	case codes.PermissionDenied:
		return "permission denied"
	case codes.Unauthenticated:
		return "not authenticated"
	case codes.ResourceExhausted:
		return "too much at once"
	case codes.OutOfRange:
		return "out of range"
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return "control plane error"
	}
	return strings.ToLower(c.String())
}

// unary bounds one unary call by callTimeout.
func unary(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// newRequestID returns a fresh idempotency key for a mutating call, so a
// retried call cannot act twice.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

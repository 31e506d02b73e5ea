package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// defaultControlPlane is where `outpost controlplane` and `outpost dev` listen by default.
	defaultControlPlane = "127.0.0.1:7443"
	// controlPlaneEnv overrides defaultControlPlane for every client verb.
	controlPlaneEnv = "OUTPOST_CONTROLPLANE"
	// credentialEnv names the credential file of every client verb.
	credentialEnv = "OUTPOST_CREDENTIAL"
	// callTimeout bounds one unary call, so a wedged control plane is an
	// error and not a hang. Streams (upload, watch) are not bounded.
	callTimeout = 30 * time.Second
)

// defaultCredentials are looked for, in order, when neither --credential
// nor $OUTPOST_CREDENTIAL names a credential: the user's own, then the
// admin credential that `outpost controlplane` and `outpost dev` write
// into their default data directories (relative to the working
// directory, where they were started).
var defaultCredentials = []string{
	"", // the user's config directory: see userCredential
	filepath.Join(".outpost", "controlplane", "admin.pem"),
	filepath.Join(".outpost", "dev", "admin.pem"),
}

// userCredential is $XDG_CONFIG_HOME/outpost/credential.pem (by default
// ~/.config/outpost/credential.pem), or "" when there is no home.
func userCredential(env *Env) string {
	dir := env.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := env.Getenv("HOME")
		if home == "" {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "outpost", "credential.pem")
}

// endpoint is which control plane a client verb calls, and as whom:
// --controlplane and --credential.
type endpoint struct {
	env        *Env
	addr       *trackedString
	credential *string
}

// trackedString is a string flag that knows whether the command line set
// it, as opposed to its default.
type trackedString struct {
	value string
	set   bool
}

func (s *trackedString) String() string     { return s.value }
func (s *trackedString) Set(v string) error { s.value, s.set = v, true; return nil }

// defaultAddr is $OUTPOST_CONTROLPLANE, else defaultControlPlane.
func defaultAddr(env *Env) string {
	if v := env.Getenv(controlPlaneEnv); v != "" {
		return v
	}
	return defaultControlPlane
}

// controlPlaneFlag registers --controlplane and --credential on fs.
func controlPlaneFlag(fs *flag.FlagSet, env *Env) *endpoint {
	addr := &trackedString{value: defaultAddr(env)}
	fs.Var(addr, "controlplane", "control plane gRPC address `host:port` (env "+controlPlaneEnv+"; default: the credential's, else "+defaultControlPlane+")")
	return &endpoint{
		env:  env,
		addr: addr,
		credential: fs.String("credential", env.Getenv(credentialEnv), "credential `FILE` (env "+credentialEnv+
			"; default: ~/.config/outpost/credential.pem, else the admin.pem that outpost controlplane or outpost dev wrote under ./.outpost)"),
	}
}

// load finds and reads the credential, and settles the address: the
// flag, else $OUTPOST_CONTROLPLANE, else the one recorded in the
// credential, else the default.
func (ep endpoint) load() (addr string, cred *pki.Credential, err error) {
	path := *ep.credential
	if path == "" {
		for _, p := range defaultCredentials {
			if p == "" {
				p = userCredential(ep.env)
			}
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		return "", nil, fmt.Errorf("no credential: give --credential FILE or set %s (the control plane writes an admin credential to DATA-DIR/admin.pem on first start; outpost user create makes more)", credentialEnv)
	}
	cred, err = pki.LoadCredential(path)
	if err != nil {
		return "", nil, err
	}
	addr = ep.addr.value
	if !ep.addr.set && ep.env.Getenv(controlPlaneEnv) == "" && cred.Server != "" {
		addr = cred.Server
	}
	if addr == "" {
		return "", nil, usagef("--controlplane is empty")
	}
	if now := time.Now(); now.After(cred.Leaf().NotAfter) {
		return "", nil, fmt.Errorf("credential %s (%s) expired at %s; ask an admin for a new one (outpost user create)", path, cred.Identity, cred.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	return addr, cred, nil
}

// client is a connection to the control plane with its client APIs.
type client struct {
	addr string
	cc   *grpc.ClientConn
	cp   outpostv1.ControlPlaneServiceClient
	art  outpostv1.ArtifactServiceClient
	adm  outpostv1.AdminServiceClient
	cred *pki.Credential
}

// dial prepares a TLS connection to the control plane with the
// endpoint's credential. It does not block: gRPC connects on the first
// call, so an unreachable control plane surfaces there, as
// codes.Unavailable, which explain turns into advice.
func dial(ep endpoint) (*client, error) {
	addr, cred, err := ep.load()
	if err != nil {
		return nil, err
	}
	cc, err := enroll.Dial(addr, cred)
	if err != nil {
		return nil, fmt.Errorf("control plane address %q: %w", addr, err)
	}
	return &client{
		addr: addr,
		cc:   cc,
		cp:   outpostv1.NewControlPlaneServiceClient(cc),
		art:  outpostv1.NewArtifactServiceClient(cc),
		adm:  outpostv1.NewAdminServiceClient(cc),
		cred: cred,
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
		if _, reason, ok := strings.Cut(msg, "authentication handshake failed: "); ok && c.cred != nil {
			// Reachable, but TLS failed: most often a credential of
			// another installation.
			fmt.Fprintf(&b, "%s: TLS with the control plane at %s failed: %s (is the credential, %s, one of this control plane?)",
				what, c.addr, strings.TrimSuffix(reason, `"`), c.cred.Identity)
			break
		}
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
		fmt.Fprintf(&b, "%s: %s", what, reasonWords(st))
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

// innerStatus returns the gRPC status error that err wraps (as the
// client libraries' errors do), or nil when there is none.
func innerStatus(err error) error {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.(error)
	}
	return nil
}

// rpcError is an explained RPC failure; code lets callers decide (watch
// retries Unavailable, not NotFound).
type rpcError struct {
	msg  string
	code codes.Code
}

func (e *rpcError) Error() string { return e.msg }

// hostKeyMismatch is the ErrorInfo reason of TrustNodeHostKey with a
// fingerprint that is not the scanned key's (controlplane.ReasonHostKeyMismatch).
const hostKeyMismatch = "HOST_KEY_MISMATCH"

// reasonWords names what went wrong: the ErrorInfo reason when it says
// more than the code (a wrong fingerprint is not "not possible now",
// which sounds temporary), else the code's words.
func reasonWords(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == hostKeyMismatch {
			return "host key fingerprint does not match"
		}
	}
	return codeWords(st.Code())
}

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

// maxPages bounds every paging loop: a server that kept answering with a
// next page token would otherwise keep the CLI asking forever.
const maxPages = 100000

// listPages fetches the pages of a List call in turn, from the first, each
// within its own call deadline, and hands every answer to keep, until the
// last page or until keep returns false. Errors are explained as what.
func listPages[R interface{ GetNextPageToken() string }](ctx context.Context, c *client, what string,
	fetch func(ctx context.Context, pageToken string) (R, error), keep func(R) bool) error {
	token := ""
	for range maxPages {
		cctx, cancel := unary(ctx)
		resp, err := fetch(cctx, token)
		cancel()
		if err != nil {
			return c.explain(what, err)
		}
		if !keep(resp) {
			return nil
		}
		if token = resp.GetNextPageToken(); token == "" {
			return nil
		}
	}
	return fmt.Errorf("%s: more than %d pages", what, maxPages)
}

// newRequestID returns a fresh idempotency key for a mutating call, so a
// retried call cannot act twice.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

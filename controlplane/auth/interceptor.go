package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/pki"
)

// caller is an authenticated client.
type caller struct {
	id     pki.Identity
	serial string
	cert   *x509.Certificate
}

// UnaryInterceptor authenticates and authorizes unary calls (see the
// package comment) and puts the caller's identity into the handler's
// context.
func (a *Authority) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if c != nil {
			if err := a.checkRevoked(ctx, c); err != nil {
				return nil, err
			}
			ctx = withCaller(ctx, c)
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streams. A stream whose
// certificate is revoked while it is open is ended with UNAUTHENTICATED.
func (a *Authority) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		c, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return err
		}
		if c == nil {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancelCause(withCaller(ctx, c))
		defer cancel(nil)
		unregister := a.revoked.register(c.serial, cancel)
		defer unregister()
		if err := a.checkRevoked(ctx, c); err != nil {
			return err
		}
		err = handler(srv, &stream{ServerStream: ss, ctx: ctx})
		if errors.Is(context.Cause(ctx), errRevoked) {
			a.log.Info("stream ended: certificate revoked", "method", info.FullMethod, "caller", c.id.Subject(), "serial", c.serial)
			return status.Errorf(codes.Unauthenticated, "client certificate %s was revoked", c.serial)
		}
		return err
	}
}

// stream replaces a server stream's context.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// authorize returns the caller of fullMethod (nil for Public methods),
// or the status error that refuses the call. Revocation is checked
// separately (checkRevoked) so streams can register first.
func (a *Authority) authorize(ctx context.Context, fullMethod string) (*caller, error) {
	perm, known := Required(fullMethod)
	if known && perm == Public {
		return nil, nil
	}
	c, err := a.authenticate(ctx)
	if err != nil {
		a.log.Info("call refused: unauthenticated", "method", fullMethod, "peer", peerAddr(ctx), "err", err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if !known {
		a.log.Warn("call refused: method not in the authorization table", "method", fullMethod, "caller", c.id.Subject())
		return nil, status.Errorf(codes.PermissionDenied, "%s is not open to anyone (it has no authorization rule)", fullMethod)
	}
	if !Allows(c.id, perm) {
		msg := denial(fullMethod, perm, c.id)
		a.log.Info("call refused: permission denied", "method", fullMethod, "caller", c.id.Subject(), "need", perm.String())
		return nil, status.Error(codes.PermissionDenied, msg)
	}
	return c, nil
}

// denial says why id may not call method, naming what it needs.
func denial(method string, p Permission, id pki.Identity) string {
	switch {
	case p == Gateway:
		return fmt.Sprintf("%s is for gateways only; %s is not a gateway", method, id)
	case id.Kind != pki.KindUser:
		return fmt.Sprintf("%s requires a user with role %s; %s is a %s", method, neededRole[p], id, id.Kind)
	case p == Admin:
		return fmt.Sprintf("%s requires role admin; %s has role %s", method, id.Subject(), id.Role)
	}
	return fmt.Sprintf("%s requires role %s (or admin); %s has role %s", method, neededRole[p], id.Subject(), id.Role)
}

// authenticate returns the caller proven by the connection's verified
// client certificate. Its errors are safe to return to the client.
func (a *Authority) authenticate(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("no connection information")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, errors.New("connection is not TLS: a credential requires TLS")
	}
	state := tlsInfo.State
	if len(state.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate: this call needs a credential (the control plane's admin credential, or one from outpost user create)")
	}
	cert := state.PeerCertificates[0]
	if !a.chainsToCA(state.VerifiedChains) {
		// Only a TLS config that does not verify client certificates gets
		// here; never trust such a certificate.
		return nil, fmt.Errorf("client certificate %s is not verified against this control plane's CA", pki.SerialString(cert))
	}
	id, err := pki.IdentityFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("client certificate is not an Outpost credential: %w", err)
	}
	now := a.cfg.Now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("client certificate %s of %s expired at %s", pki.SerialString(cert), id.Subject(), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("client certificate %s of %s is not valid before %s", pki.SerialString(cert), id.Subject(), cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return &caller{id: id, serial: pki.SerialString(cert), cert: cert}, nil
}

// chainsToCA reports whether one of the verified chains ends at our CA.
func (a *Authority) chainsToCA(chains [][]*x509.Certificate) bool {
	for _, chain := range chains {
		if len(chain) > 0 && chain[len(chain)-1].Equal(a.ca.Certificate()) {
			return true
		}
	}
	return false
}

func (a *Authority) checkRevoked(ctx context.Context, c *caller) error {
	revoked, err := a.revoked.isRevoked(ctx, c.serial)
	if err != nil {
		a.log.Warn("call refused: revocation check failed", "caller", c.id.Subject(), "err", err)
		return status.Error(codes.Unavailable, "cannot check the client certificate's revocation now; retry")
	}
	if revoked {
		a.log.Info("call refused: certificate revoked", "caller", c.id.Subject(), "serial", c.serial)
		return status.Errorf(codes.Unauthenticated, "client certificate %s of %s is revoked", c.serial, c.id.Subject())
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// CheckGateway reports, as a gRPC status error, whether the caller of ctx
// is the gateway name serving datacenter: the control plane calls it on a
// gateway's hello, so a gateway cannot claim another's name or nodes of
// another datacenter.
func CheckGateway(ctx context.Context, name, datacenter string) error {
	id, ok := FromContext(ctx)
	switch {
	case !ok || id.Kind != pki.KindGateway:
		return status.Error(codes.PermissionDenied, "only a gateway certificate may announce a gateway")
	case id.Name != name:
		return status.Errorf(codes.PermissionDenied, "gateway certificate is for %q, not %q", id.Name, name)
	case id.Datacenter != datacenter:
		return status.Errorf(codes.PermissionDenied, "gateway %q is bound to datacenter %q, not %q", id.Name, id.Datacenter, datacenter)
	}
	return nil
}

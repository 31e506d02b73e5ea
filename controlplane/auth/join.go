package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// JoinServer serves GatewayService.JoinGateway and
// RenewGatewayCertificate. The control plane's GatewayService delegates
// those two methods to it; its other methods are not here.
type JoinServer struct {
	a *Authority
}

// JoinServer returns the server of the join and renew calls.
func (a *Authority) JoinServer() *JoinServer { return &JoinServer{a: a} }

// nameTakenError refuses a join under a name that has valid certificates.
type nameTakenError struct {
	name    string
	serials []string
}

func (e *nameTakenError) Error() string {
	return fmt.Sprintf("gateway name %q already has a valid certificate (serial %s): revoke it first, or join with a token created for this gateway name", e.name, strings.Join(e.serials, ", "))
}

// JoinGateway redeems a join token for the gateway's first certificate.
// If the token names the gateway, the name's earlier certificates are
// revoked in the same transaction (the gateway is being replaced).
func (j *JoinServer) JoinGateway(ctx context.Context, req *outpostv1.JoinGatewayRequest) (*outpostv1.JoinGatewayResponse, error) {
	a := j.a
	name := req.GetName()
	if err := pki.CheckName(name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
	}
	pub, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	if req.GetToken() == "" {
		return nil, status.Error(codes.Unauthenticated, "token is required")
	}
	var (
		is       *issued
		replaced []*outpostv1.Credential // revoked by the committed transaction
	)
	tok, err := a.tokens.Redeem(ctx, req.GetToken(), name, func(tok *outpostv1.JoinToken) ([]clientv3.Op, error) {
		replaced = nil
		recs, err := a.credentialsOf(ctx, pki.KindGateway, name)
		if err != nil {
			return nil, err
		}
		var live []*outpostv1.Credential
		var serials []string
		for _, rec := range recs {
			if !rec.GetRevoked() {
				live = append(live, rec)
				serials = append(serials, rec.GetSerial())
			}
		}
		if len(live) > 0 && tok.GetGatewayName() != name {
			return nil, &nameTakenError{name: name, serials: serials}
		}
		ops, err := a.revokeOps(ctx, live)
		if err != nil {
			return nil, err
		}
		replaced = live
		id := pki.Identity{Kind: pki.KindGateway, Name: name, Datacenter: tok.GetDatacenter()}
		is, err = a.issue(ctx, id, pub, a.cfg.GatewayCertTTL, "join token "+tok.GetId())
		if err != nil {
			return nil, err
		}
		return append(ops, is.put), nil
	})
	var taken *nameTakenError
	switch {
	case err == nil:
	case errors.As(err, &taken):
		a.log.Info("gateway join refused", "gateway", name, "peer", peerAddr(ctx), "err", err)
		return nil, status.Error(codes.AlreadyExists, err.Error())
	case isTokenError(err):
		a.log.Info("gateway join refused", "gateway", name, "peer", peerAddr(ctx), "err", err)
		return nil, status.Errorf(codes.Unauthenticated, "join token refused: %v", err)
	default:
		a.log.Error("gateway join failed", "gateway", name, "err", err)
		return nil, status.Errorf(codes.Unavailable, "join: %v", err)
	}
	a.revokedCommitted(replaced, "replaced by a join with a token for its name")
	a.log.Info("gateway joined", "gateway", name, "datacenter", tok.GetDatacenter(), "token_id", tok.GetId(),
		"serial", is.record.GetSerial(), "expires", is.record.GetExpireTime().AsTime(), "peer", peerAddr(ctx))
	return &outpostv1.JoinGatewayResponse{
		CertificatePem: string(is.certPEM),
		CaPem:          string(a.ca.CertPEM()),
		Datacenter:     tok.GetDatacenter(),
		ExpireTime:     timestamppb.New(is.record.GetExpireTime().AsTime()),
	}, nil
}

func isTokenError(err error) bool {
	for _, e := range []error{ErrTokenNotFound, ErrTokenUsed, ErrTokenExpired, ErrTokenRevoked, ErrTokenWrongName, errTokenRaceRetries} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// RenewGatewayCertificate issues the calling gateway a new certificate
// with the same name and datacenter. The interceptor has checked that the
// caller's certificate is a valid, unrevoked gateway certificate; the old
// one stays valid until it expires, so connections made with it continue.
func (j *JoinServer) RenewGatewayCertificate(ctx context.Context, req *outpostv1.RenewGatewayCertificateRequest) (*outpostv1.RenewGatewayCertificateResponse, error) {
	a := j.a
	c := callerFromContext(ctx)
	if c == nil || c.id.Kind != pki.KindGateway || c.serial == "" {
		return nil, status.Error(codes.PermissionDenied, "only a gateway may renew a gateway certificate, with its current certificate")
	}
	pub, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	certPEM, rec, err := a.IssueCredential(ctx, c.id, pub, a.cfg.GatewayCertTTL, "renewal of "+c.serial)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "renew: %v", err)
	}
	return &outpostv1.RenewGatewayCertificateResponse{
		CertificatePem: string(certPEM),
		CaPem:          string(a.ca.CertPEM()),
		ExpireTime:     rec.GetExpireTime(),
	}, nil
}

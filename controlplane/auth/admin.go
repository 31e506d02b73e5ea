package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Page sizes of the List calls.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// AdminServer implements outpostv1.AdminServiceServer. The interceptor
// admits only admins.
type AdminServer struct {
	outpostv1.UnimplementedAdminServiceServer
	a *Authority
}

var _ outpostv1.AdminServiceServer = (*AdminServer)(nil)

// AdminServer returns the AdminService implementation.
func (a *Authority) AdminServer() *AdminServer { return &AdminServer{a: a} }

// who names the caller for records ("user/alice").
func who(ctx context.Context) string {
	if id, ok := FromContext(ctx); ok {
		return id.Subject()
	}
	return "unknown"
}

// CreateJoinToken implements AdminService.
func (s *AdminServer) CreateJoinToken(ctx context.Context, req *outpostv1.CreateJoinTokenRequest) (*outpostv1.CreateJoinTokenResponse, error) {
	if err := pki.CheckDatacenter(req.GetDatacenter()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "datacenter: %v", err)
	}
	if n := req.GetGatewayName(); n != "" {
		if err := pki.CheckName(n); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "gateway_name: %v", err)
		}
	}
	ttl := req.GetTtl().AsDuration()
	if req.GetTtl() != nil && (!req.GetTtl().IsValid() || ttl < 0 || ttl > MaxJoinTokenTTL) {
		return nil, status.Errorf(codes.InvalidArgument, "ttl: %v outside [0, %v]", ttl, MaxJoinTokenTTL)
	}
	token, info, err := s.a.tokens.Create(ctx, TokenSpec{
		Datacenter:  req.GetDatacenter(),
		GatewayName: req.GetGatewayName(),
		TTL:         ttl,
		Creator:     who(ctx),
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "create join token: %v", err)
	}
	s.a.log.Info("join token created", "token_id", info.GetId(), "datacenter", info.GetDatacenter(),
		"gateway", info.GetGatewayName(), "creator", info.GetCreator(), "expires", info.GetExpireTime().AsTime())
	return &outpostv1.CreateJoinTokenResponse{Token: token, JoinToken: info}, nil
}

// ListJoinTokens implements AdminService.
func (s *AdminServer) ListJoinTokens(ctx context.Context, req *outpostv1.ListJoinTokensRequest) (*outpostv1.ListJoinTokensResponse, error) {
	size, after, err := page(req.GetPageSize(), req.GetPageToken(), store.JoinTokensPrefix)
	if err != nil {
		return nil, err
	}
	tokens, next, err := s.a.tokens.List(ctx, size, after)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list join tokens: %v", err)
	}
	return &outpostv1.ListJoinTokensResponse{JoinTokens: tokens, NextPageToken: pageToken(next)}, nil
}

// RevokeJoinToken implements AdminService.
func (s *AdminServer) RevokeJoinToken(ctx context.Context, req *outpostv1.RevokeJoinTokenRequest) (*outpostv1.RevokeJoinTokenResponse, error) {
	info, err := s.a.tokens.Revoke(ctx, req.GetId())
	switch {
	case errors.Is(err, ErrTokenNotFound):
		return nil, status.Errorf(codes.NotFound, "id: %v", err)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "revoke join token: %v", err)
	}
	s.a.log.Info("join token revoked", "token_id", info.GetId(), "by", who(ctx), "state", info.GetState().String())
	return &outpostv1.RevokeJoinTokenResponse{JoinToken: info}, nil
}

// CreateUser implements AdminService.
func (s *AdminServer) CreateUser(ctx context.Context, req *outpostv1.CreateUserRequest) (*outpostv1.CreateUserResponse, error) {
	if err := pki.CheckName(req.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
	}
	role := roleFromProto(req.GetRole())
	if role == pki.RoleUnspecified {
		return nil, status.Error(codes.InvalidArgument, "role: required (viewer, deployer, approver or admin)")
	}
	pub, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	ttl := req.GetTtl().AsDuration()
	switch {
	case req.GetTtl() != nil && (!req.GetTtl().IsValid() || ttl < 0 || ttl > MaxUserCertTTL):
		return nil, status.Errorf(codes.InvalidArgument, "ttl: %v outside [0, %v]", ttl, MaxUserCertTTL)
	case ttl == 0:
		ttl = DefaultUserCertTTL
	}
	id := pki.Identity{Kind: pki.KindUser, Name: req.GetName(), Role: role}
	certPEM, rec, err := s.a.IssueCredential(ctx, id, pub, ttl, who(ctx))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "create user: %v", err)
	}
	return &outpostv1.CreateUserResponse{CertificatePem: string(certPEM), CaPem: string(s.a.ca.CertPEM()), Credential: rec}, nil
}

// ListCredentials implements AdminService.
func (s *AdminServer) ListCredentials(ctx context.Context, req *outpostv1.ListCredentialsRequest) (*outpostv1.ListCredentialsResponse, error) {
	size, after, err := page(req.GetPageSize(), req.GetPageToken(), store.CredentialsPrefix)
	if err != nil {
		return nil, err
	}
	recs, next, err := s.a.listCredentials(ctx, kindFromProto(req.GetKind()), size, after)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list credentials: %v", err)
	}
	return &outpostv1.ListCredentialsResponse{Credentials: recs, NextPageToken: pageToken(next)}, nil
}

// RevokeCredential implements AdminService.
func (s *AdminServer) RevokeCredential(ctx context.Context, req *outpostv1.RevokeCredentialRequest) (*outpostv1.RevokeCredentialResponse, error) {
	reason := req.GetReason()
	if reason == "" {
		reason = "revoked by " + who(ctx)
	} else {
		reason += " (by " + who(ctx) + ")"
	}
	var (
		recs []*outpostv1.Credential
		err  error
	)
	switch kind := kindFromProto(req.GetKind()); {
	case req.GetSerial() != "" && (req.GetName() != "" || kind != pki.KindUnspecified):
		return nil, status.Error(codes.InvalidArgument, "serial: give a serial, or a kind and a name, not both")
	case req.GetSerial() != "":
		var rec *outpostv1.Credential
		rec, err = s.a.Revoke(ctx, strings.ToLower(req.GetSerial()), reason)
		recs = append(recs, rec)
	case kind == pki.KindUnspecified || req.GetName() == "":
		return nil, status.Error(codes.InvalidArgument, "kind and name: required when no serial is given")
	default:
		if err := pki.CheckName(req.GetName()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
		}
		recs, err = s.a.RevokeName(ctx, kind, req.GetName(), reason)
	}
	switch {
	case errors.Is(err, ErrCredentialNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "revoke: %v", err)
	}
	return &outpostv1.RevokeCredentialResponse{Credentials: recs}, nil
}

// page validates a List request's paging and returns the size and the key
// to list after.
func page(size int32, token, prefix string) (int64, string, error) {
	switch {
	case size < 0:
		return 0, "", status.Error(codes.InvalidArgument, "page_size: negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	if token == "" {
		return int64(size), "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !strings.HasPrefix(string(b), prefix) {
		return 0, "", status.Error(codes.InvalidArgument, "page_token: not a token from this list")
	}
	return int64(size), string(b), nil
}

// pageToken makes a key an opaque page token ("" stays "").
func pageToken(key string) string {
	if key == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

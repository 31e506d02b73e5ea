package audit

import (
	"context"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// IdentityFunc names the caller of the call ctx belongs to: kind is
// "user", "gateway" or "" (anonymous), role a user's role ("viewer",
// "deployer", "approver", "admin"), empty otherwise.
type IdentityFunc func(ctx context.Context) (name, kind, role string)

// FromPKI adapts a function returning a pki.Identity, such as
// controlplane/auth's FromContext, to an IdentityFunc. Use it when the
// audit interceptors run inside the auth interceptors.
func FromPKI(f func(context.Context) (pki.Identity, bool)) IdentityFunc {
	return func(ctx context.Context) (string, string, string) {
		id, ok := f(ctx)
		if !ok {
			return "", "", ""
		}
		return pkiStrings(id)
	}
}

// PeerIdentity names the caller by the client certificate that TLS
// verified for the connection; anonymous without one. It works before
// authorization runs, so calls that auth then refuses are attributed too.
// It does not check revocation: a revoked caller is named, and the
// entry's result says the call was refused.
func PeerIdentity(ctx context.Context) (name, kind, role string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", "", ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	// Only a certificate that TLS verified against a CA counts; a TLS
	// config that does not verify client certificates leaves no chains.
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return "", "", ""
	}
	id, err := pki.IdentityFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return "", "", ""
	}
	return pkiStrings(id)
}

func pkiStrings(id pki.Identity) (name, kind, role string) {
	switch id.Kind {
	case pki.KindUser:
		return id.Name, "user", id.Role.String()
	case pki.KindGateway:
		return id.Name, "gateway", ""
	}
	return id.Name, "", ""
}

// actorKind maps IdentityFunc's kind to the API's enum.
func actorKind(kind string) outpostv1.AuditActorKind {
	switch kind {
	case "user":
		return outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER
	case "gateway":
		return outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY
	case "system":
		return outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM
	}
	return outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_ANONYMOUS
}

// roleOf maps a role name ("admin") to the API's enum; unknown names are
// UNSPECIFIED.
func roleOf(role string) outpostv1.Role {
	if role == "" {
		return outpostv1.Role_ROLE_UNSPECIFIED
	}
	return outpostv1.Role(outpostv1.Role_value["ROLE_"+strings.ToUpper(role)])
}

package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// ErrCredentialNotFound is returned when no issued certificate matches.
var ErrCredentialNotFound = errors.New("no such credential")

// issued is a certificate just signed, not yet recorded.
type issued struct {
	certPEM []byte
	record  *outpostv1.Credential
	put     clientv3.Op // records it, bound to a lease that ends after it expires
}

// issue signs a certificate for id and pub and prepares its record. The
// caller commits issued.put (alone or in a larger transaction) before
// handing the certificate out, so every certificate in use is listed and
// can be revoked by name.
func (a *Authority) issue(ctx context.Context, id pki.Identity, pub crypto.PublicKey, ttl time.Duration, issuer string) (*issued, error) {
	certPEM, err := a.ca.IssueClient(id, pub, ttl)
	if err != nil {
		return nil, err
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, err
	}
	rec := &outpostv1.Credential{
		Serial:     pki.SerialString(cert),
		Kind:       kindToProto(id.Kind),
		Name:       id.Name,
		Role:       roleToProto(id.Role),
		Datacenter: id.Datacenter,
		IssueTime:  timestamppb.New(a.cfg.Now()),
		ExpireTime: timestamppb.New(cert.NotAfter),
		Issuer:     issuer,
	}
	put, err := leasedPut(ctx, a.store, store.CredentialKey(rec.Serial), rec, cert.NotAfter.Sub(a.cfg.Now())+recordRetention)
	if err != nil {
		return nil, err
	}
	return &issued{certPEM: certPEM, record: rec, put: put}, nil
}

// IssueCredential signs and records a certificate carrying id for the
// public key pub, valid for ttl; issuer says how it came about, for the
// record. It is for the control plane's own needs (the bootstrap admin
// credential, outpost dev's gateway); people use AdminService.
func (a *Authority) IssueCredential(ctx context.Context, id pki.Identity, pub crypto.PublicKey, ttl time.Duration, issuer string) (certPEM []byte, rec *outpostv1.Credential, err error) {
	is, err := a.issue(ctx, id, pub, ttl, issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: issue %s: %w", id.Subject(), err)
	}
	if err := a.store.Txn(ctx, nil, is.put); err != nil {
		return nil, nil, fmt.Errorf("auth: record %s: %w", id.Subject(), err)
	}
	a.log.Info("credential issued", "subject", id.Subject(), "serial", is.record.GetSerial(), "issuer", issuer, "expires", is.record.GetExpireTime().AsTime())
	return is.certPEM, is.record, nil
}

// Revoke revokes the certificate with this serial (lower-case hex) and
// returns its record. Revoking a revoked certificate changes nothing.
func (a *Authority) Revoke(ctx context.Context, serial, reason string) (*outpostv1.Credential, error) {
	if !validSerial(serial) {
		return nil, fmt.Errorf("%w: serial %q is not lower-case hex without leading zeros", ErrCredentialNotFound, serial)
	}
	rec := new(outpostv1.Credential)
	found, _, err := a.store.Get(ctx, store.CredentialKey(serial), rec)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("%w: serial %s (unknown, or expired)", ErrCredentialNotFound, serial)
	}
	if err := a.revokeRecords(ctx, []*outpostv1.Credential{rec}, reason); err != nil {
		return nil, err
	}
	return rec, nil
}

// RevokeName revokes every unexpired certificate of the user or gateway
// name and returns their records (those revoked before included).
// ErrCredentialNotFound when there are none.
func (a *Authority) RevokeName(ctx context.Context, kind pki.Kind, name, reason string) ([]*outpostv1.Credential, error) {
	recs, err := a.credentialsOf(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: %s/%s has no unexpired certificate", ErrCredentialNotFound, kind, name)
	}
	if err := a.revokeRecords(ctx, recs, reason); err != nil {
		return nil, err
	}
	return recs, nil
}

// revokeOps returns the ops that revoke recs (marking them in place) and
// publish them to every replica's revocation cache. Records revoked
// before are left alone.
func (a *Authority) revokeOps(ctx context.Context, recs []*outpostv1.Credential) ([]clientv3.Op, error) {
	now := a.cfg.Now()
	var ops []clientv3.Op
	for _, rec := range recs {
		if rec.GetRevoked() {
			continue
		}
		rec.Revoked = true
		rec.RevokeTime = timestamppb.New(now)
		update, err := ignoreLeasePut(store.CredentialKey(rec.GetSerial()), rec)
		if err != nil {
			return nil, err
		}
		// Own lease: the credential record may be gone before this one.
		publish, err := leasedPut(ctx, a.store, store.RevokedKey(rec.GetSerial()), rec, rec.GetExpireTime().AsTime().Sub(now)+recordRetention)
		if err != nil {
			return nil, err
		}
		ops = append(ops, update, publish)
	}
	return ops, nil
}

func (a *Authority) revokeRecords(ctx context.Context, recs []*outpostv1.Credential, reason string) error {
	ops, err := a.revokeOps(ctx, recs)
	if err != nil {
		return fmt.Errorf("auth: revoke: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	// Txn splits above MaxTxnOps; each chunk is whole revocations (2 ops).
	if err := a.store.Txn(ctx, nil, ops...); err != nil {
		return fmt.Errorf("auth: revoke: %w", err)
	}
	a.revokedCommitted(recs, reason)
	return nil
}

// revokedCommitted follows a committed transaction of revokeOps for recs:
// this replica refuses them at once, the others when their watch delivers
// the change.
func (a *Authority) revokedCommitted(recs []*outpostv1.Credential, reason string) {
	a.revoked.markRevoked(recs)
	for _, rec := range recs {
		a.log.Info("credential revoked", "serial", rec.GetSerial(), "kind", rec.GetKind().String(), "name", rec.GetName(), "reason", reason)
	}
}

// credentialsOf returns the unexpired certificate records of kind/name.
// It scans every record: names are not part of the key, and the records
// are few (unexpired certificates only).
func (a *Authority) credentialsOf(ctx context.Context, kind pki.Kind, name string) ([]*outpostv1.Credential, error) {
	var out []*outpostv1.Credential
	err := a.scanCredentials(ctx, func(rec *outpostv1.Credential) {
		if rec.GetKind() == kindToProto(kind) && rec.GetName() == name {
			out = append(out, rec)
		}
	})
	return out, err
}

// scanCredentials calls f for every unexpired credential record.
func (a *Authority) scanCredentials(ctx context.Context, f func(*outpostv1.Credential)) error {
	now := a.cfg.Now()
	after := ""
	// Each page advances after; the bound guards against a bug.
	for page := 0; page < 1<<16; page++ {
		next, err := a.store.List(ctx, store.CredentialsPrefix, 0, after, func(_ string, v []byte) error {
			rec := new(outpostv1.Credential)
			if err := proto.Unmarshal(v, rec); err != nil {
				return err
			}
			if now.Before(rec.GetExpireTime().AsTime()) {
				f(rec)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("auth: credentials: %w", err)
		}
		if next == "" {
			return nil
		}
		after = next
	}
	return errors.New("auth: credentials: too many pages")
}

// listCredentials returns up to limit unexpired records of kind (all for
// KindUnspecified) after key `after`, and the key to continue from.
func (a *Authority) listCredentials(ctx context.Context, kind pki.Kind, limit int64, after string) ([]*outpostv1.Credential, string, error) {
	now := a.cfg.Now()
	var out []*outpostv1.Credential
	next, err := a.store.List(ctx, store.CredentialsPrefix, limit, after, func(_ string, v []byte) error {
		rec := new(outpostv1.Credential)
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		if now.Before(rec.GetExpireTime().AsTime()) && (kind == pki.KindUnspecified || rec.GetKind() == kindToProto(kind)) {
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("auth: credentials: %w", err)
	}
	return out, next, nil
}

func kindToProto(k pki.Kind) outpostv1.CredentialKind {
	switch k {
	case pki.KindUser:
		return outpostv1.CredentialKind_CREDENTIAL_KIND_USER
	case pki.KindGateway:
		return outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY
	}
	return outpostv1.CredentialKind_CREDENTIAL_KIND_UNSPECIFIED
}

func kindFromProto(k outpostv1.CredentialKind) pki.Kind {
	switch k {
	case outpostv1.CredentialKind_CREDENTIAL_KIND_USER:
		return pki.KindUser
	case outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY:
		return pki.KindGateway
	}
	return pki.KindUnspecified
}

var roles = map[pki.Role]outpostv1.Role{
	pki.RoleViewer:   outpostv1.Role_ROLE_VIEWER,
	pki.RoleDeployer: outpostv1.Role_ROLE_DEPLOYER,
	pki.RoleApprover: outpostv1.Role_ROLE_APPROVER,
	pki.RoleAdmin:    outpostv1.Role_ROLE_ADMIN,
}

func roleToProto(r pki.Role) outpostv1.Role { return roles[r] }

func roleFromProto(r outpostv1.Role) pki.Role {
	for k, v := range roles {
		if v == r {
			return k
		}
	}
	return pki.RoleUnspecified
}

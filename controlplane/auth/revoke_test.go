package auth_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestRevokedCertificateRefused(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := outpostv1.NewAdminServiceClient(e.user("root", pki.RoleAdmin))
	cred := e.credential(pki.Identity{Kind: pki.KindUser, Name: "bob", Role: pki.RoleViewer}, time.Hour)
	conn := e.as(cred)
	cp := outpostv1.NewControlPlaneServiceClient(conn)
	get := func() error {
		_, err := cp.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
		return e.recordErr(err)
	}
	wantCode(t, "before revocation", get(), codes.OK)

	// An open stream of the certificate ends when it is revoked.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := cp.WatchRollout(wctx, &outpostv1.WatchRolloutRequest{Id: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("watch before revocation: %v", err)
	}

	serial := pki.SerialString(cred.Leaf())
	resp, err := admin.RevokeCredential(ctx, &outpostv1.RevokeCredentialRequest{Serial: serial, Reason: "laptop lost"})
	if err != nil {
		t.Fatalf("RevokeCredential: %v", err)
	}
	if len(resp.GetCredentials()) != 1 || !resp.GetCredentials()[0].GetRevoked() || resp.GetCredentials()[0].GetName() != "bob" {
		t.Errorf("RevokeCredential answered %v", resp.GetCredentials())
	}
	// The revoking replica refuses at once.
	wantCode(t, "after revocation", get(), codes.Unauthenticated, "revoked")
	_, err = watch.Recv()
	wantCode(t, "open stream after revocation", e.recordErr(err), codes.Unauthenticated, "revoked")

	// Revoking again is a no-op; unknown serials are NOT_FOUND.
	if _, err := admin.RevokeCredential(ctx, &outpostv1.RevokeCredentialRequest{Serial: serial}); err != nil {
		t.Errorf("second revocation: %v", err)
	}
	for name, req := range map[string]*outpostv1.RevokeCredentialRequest{
		"unknown serial":  {Serial: "4abc"},
		"unknown name":    {Kind: outpostv1.CredentialKind_CREDENTIAL_KIND_USER, Name: "nobody"},
		"malformed":       {Serial: "../x"},
		"leading zeros":   {Serial: "0" + serial},
		"serial and name": {Serial: serial, Name: "bob"},
		"name, no kind":   {Name: "bob"},
		"nothing":         {},
	} {
		_, err := admin.RevokeCredential(ctx, req)
		want := codes.NotFound
		if name == "serial and name" || name == "name, no kind" || name == "nothing" {
			want = codes.InvalidArgument
		}
		wantCode(t, name, e.recordErr(err), want)
	}
}

func TestRevokeByName(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := outpostv1.NewAdminServiceClient(e.user("root", pki.RoleAdmin))
	id := pki.Identity{Kind: pki.KindUser, Name: "carol", Role: pki.RoleDeployer}
	a, b := e.as(e.credential(id, time.Hour)), e.as(e.credential(id, time.Hour))
	other := e.user("dave", pki.RoleDeployer)

	resp, err := admin.RevokeCredential(ctx, &outpostv1.RevokeCredentialRequest{Kind: outpostv1.CredentialKind_CREDENTIAL_KIND_USER, Name: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCredentials()) != 2 {
		t.Errorf("revoked %d credentials, want 2", len(resp.GetCredentials()))
	}
	for name, conn := range map[string]struct {
		c    outpostv1.ControlPlaneServiceClient
		want codes.Code
	}{
		"carol a": {outpostv1.NewControlPlaneServiceClient(a), codes.Unauthenticated},
		"carol b": {outpostv1.NewControlPlaneServiceClient(b), codes.Unauthenticated},
		"dave":    {outpostv1.NewControlPlaneServiceClient(other), codes.OK},
	} {
		_, err := conn.c.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{})
		wantCode(t, name, e.recordErr(err), conn.want)
	}
}

// TestRevocationReachesOtherReplicas runs two Authorities on one etcd: a
// revocation written by one is enforced by the other through its watch.
func TestRevocationReachesOtherReplicas(t *testing.T) {
	e1 := newEnv(t)
	caDir := t.TempDir()
	// Both replicas must share the CA; copy e1's into caDir.
	copyCA(t, e1.ca, caDir)
	e2 := newEnvOn(t, e1.store, caDir)
	ctx := ctxT(t)

	cred := e1.credential(pki.Identity{Kind: pki.KindUser, Name: "erin", Role: pki.RoleViewer}, time.Hour)
	// Stream open on replica 2 before the revocation.
	cp2 := outpostv1.NewControlPlaneServiceClient(e2.as(cred))
	watch, err := cp2.WatchRollout(ctx, &outpostv1.WatchRolloutRequest{Id: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("watch on replica 2: %v", err)
	}
	if _, err := e1.auth.Revoke(ctx, pki.SerialString(cred.Leaf()), "test"); err != nil {
		t.Fatal(err)
	}
	_, err = watch.Recv()
	wantCode(t, "replica 2 stream after revocation on replica 1", e2.recordErr(err), codes.Unauthenticated, "revoked")

	// New calls on replica 2 are refused too (the watch delivered it:
	// the stream above already ended).
	_, err = cp2.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
	wantCode(t, "replica 2 call", e2.recordErr(err), codes.Unauthenticated, "revoked")

	// A replica started later loads the revocation.
	caDir3 := t.TempDir()
	copyCA(t, e1.ca, caDir3)
	e3 := newEnvOn(t, e1.store, caDir3)
	_, err = outpostv1.NewControlPlaneServiceClient(e3.as(cred)).GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: "r"})
	wantCode(t, "replica 3 call", e3.recordErr(err), codes.Unauthenticated, "revoked")
}

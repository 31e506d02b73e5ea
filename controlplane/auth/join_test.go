package auth_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// createToken asks the AdminService (as admin) for a join token.
func createToken(t *testing.T, e *env, admin *grpc.ClientConn, req *outpostv1.CreateJoinTokenRequest) *outpostv1.CreateJoinTokenResponse {
	t.Helper()
	resp, err := outpostv1.NewAdminServiceClient(admin).CreateJoinToken(ctxT(t), req)
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	e.addSecret(resp.GetToken())
	return resp
}

// join does what a gateway does with a token: verify the control plane
// by the token's CA fingerprint, send a CSR for a new key, and build its
// credential from the answer.
func join(ctx context.Context, e *env, token, name string) (*pki.Credential, *outpostv1.JoinGatewayResponse, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	e.addSecretKey(key)
	csrPEM, err := pki.CreateCSR(key, name)
	if err != nil {
		return nil, nil, err
	}
	var fp [32]byte
	if tok, err := pki.ParseJoinToken(token); err == nil {
		fp = tok.CAFingerprint
	} else {
		fp = e.ca.Fingerprint()
	}
	conn := e.dial(pki.JoinTLSConfig(fp, ""))
	resp, err := outpostv1.NewGatewayServiceClient(conn).JoinGateway(ctx, &outpostv1.JoinGatewayRequest{Token: token, Name: name, CsrPem: string(csrPEM)})
	if err != nil {
		return nil, nil, e.recordErr(err)
	}
	data, err := pki.EncodeCredential([]byte(resp.GetCaPem()), []byte(resp.GetCertificatePem()), key, "")
	if err != nil {
		return nil, nil, err
	}
	cred, err := pki.ParseCredential(data)
	return cred, resp, err
}

func TestJoinFlow(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := e.user("root", pki.RoleAdmin)

	tok := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1", Ttl: durationpb.New(30 * time.Minute)})
	if tok.GetJoinToken().GetState() != outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE || tok.GetJoinToken().GetCreator() != "user/root" {
		t.Errorf("token description %v", tok.GetJoinToken())
	}
	cred, resp, err := join(ctx, e, tok.GetToken(), "gw-1")
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	want := pki.Identity{Kind: pki.KindGateway, Name: "gw-1", Datacenter: "seoul-1"}
	if cred.Identity != want || resp.GetDatacenter() != "seoul-1" {
		t.Errorf("joined as %+v (dc %q), want %+v", cred.Identity, resp.GetDatacenter(), want)
	}
	if got, wantExp := resp.GetExpireTime().AsTime(), e.clock.Now().Add(auth.DefaultGatewayCertTTL); got.Sub(wantExp).Abs() > time.Second {
		t.Errorf("expires %v, want about %v", got, wantExp)
	}
	gw := e.as(cred)
	if err := fetch(ctx, gw); err != nil {
		t.Fatalf("joined gateway's call: %v", err)
	}
	if id, _ := e.stub.last(); id != want {
		t.Errorf("handler saw %+v, want %+v", id, want)
	}

	t.Run("reused token", func(t *testing.T) {
		_, _, err := join(ctx, e, tok.GetToken(), "gw-2")
		wantCode(t, "join with a used token", err, codes.Unauthenticated, "already used")
		_, _, err = join(ctx, e, tok.GetToken(), "gw-1")
		wantCode(t, "join again under the same name", err, codes.Unauthenticated, "already used")
	})
	t.Run("expired token", func(t *testing.T) {
		short := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1", Ttl: durationpb.New(time.Minute)})
		e.clock.Advance(time.Minute + time.Second)
		_, _, err := join(ctx, e, short.GetToken(), "gw-late")
		wantCode(t, "join with an expired token", err, codes.Unauthenticated, "expired")
	})
	t.Run("revoked token", func(t *testing.T) {
		r := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1"})
		rev, err := outpostv1.NewAdminServiceClient(admin).RevokeJoinToken(ctx, &outpostv1.RevokeJoinTokenRequest{Id: r.GetJoinToken().GetId()})
		if err != nil {
			t.Fatalf("RevokeJoinToken: %v", err)
		}
		if rev.GetJoinToken().GetState() != outpostv1.JoinTokenState_JOIN_TOKEN_STATE_REVOKED {
			t.Errorf("state after revoke %v", rev.GetJoinToken().GetState())
		}
		_, _, err = join(ctx, e, r.GetToken(), "gw-revoked")
		wantCode(t, "join with a revoked token", err, codes.Unauthenticated, "revoked")
	})
	t.Run("unknown, malformed and foreign tokens", func(t *testing.T) {
		unknown, err := pki.NewJoinToken(e.ca.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		foreign, _ := pki.NewJoinToken(sha256.Sum256([]byte("other CA")))
		e.addSecret(unknown.Encode())
		e.addSecret(foreign.Encode())
		for name, tc := range map[string]struct {
			token string
			code  codes.Code
		}{
			"unknown":   {unknown.Encode(), codes.Unauthenticated},
			"malformed": {"opjt_nonsense", codes.Unauthenticated},
			// The gateway's TLS check refuses this server before sending.
			"foreign": {foreign.Encode(), codes.Unavailable},
		} {
			_, _, err := join(ctx, e, tc.token, "gw-x")
			wantCode(t, name, err, tc.code)
		}
	})
	t.Run("token bound to another name", func(t *testing.T) {
		bound := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "busan-1", GatewayName: "gw-busan"})
		_, _, err := join(ctx, e, bound.GetToken(), "gw-other")
		wantCode(t, "join under another name", err, codes.Unauthenticated, "another gateway name")
		// The refusal did not use the token up.
		cred, _, err := join(ctx, e, bound.GetToken(), "gw-busan")
		if err != nil {
			t.Fatalf("join under the token's name: %v", err)
		}
		if cred.Identity.Datacenter != "busan-1" {
			t.Errorf("datacenter %q, want busan-1", cred.Identity.Datacenter)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		r := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1"})
		conn := e.dial(pki.JoinTLSConfig(e.ca.Fingerprint(), ""))
		for name, req := range map[string]*outpostv1.JoinGatewayRequest{
			"bad name": {Token: r.GetToken(), Name: "gw/1", CsrPem: csr(t, e)},
			"no CSR":   {Token: r.GetToken(), Name: "gw-bad"},
			"bad CSR":  {Token: r.GetToken(), Name: "gw-bad", CsrPem: "-----BEGIN CERTIFICATE REQUEST-----\nQUJD\n-----END CERTIFICATE REQUEST-----\n"},
		} {
			_, err := outpostv1.NewGatewayServiceClient(conn).JoinGateway(ctx, req)
			wantCode(t, name, e.recordErr(err), codes.InvalidArgument)
		}
		// None of them used the token.
		if _, _, err := join(ctx, e, r.GetToken(), "gw-good"); err != nil {
			t.Errorf("join after refused bad requests: %v", err)
		}
	})
}

func TestJoinNameTakenAndReplaced(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := e.user("root", pki.RoleAdmin)
	first := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc1"})
	old, _, err := join(ctx, e, first.GetToken(), "gw")
	if err != nil {
		t.Fatal(err)
	}
	oldConn := e.as(old)
	if err := fetch(ctx, oldConn); err != nil {
		t.Fatal(err)
	}

	// An unbound token cannot take a name in use.
	unbound := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc2"})
	_, _, err = join(ctx, e, unbound.GetToken(), "gw")
	wantCode(t, "unbound token, name in use", err, codes.AlreadyExists, "revoke it first")

	// A token made for the name replaces the gateway: the old certificate
	// is revoked in the same transaction.
	bound := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc2", GatewayName: "gw"})
	repl, _, err := join(ctx, e, bound.GetToken(), "gw")
	if err != nil {
		t.Fatalf("replacing join: %v", err)
	}
	if repl.Identity.Datacenter != "dc2" {
		t.Errorf("replacement datacenter %q, want dc2", repl.Identity.Datacenter)
	}
	wantCode(t, "old certificate after replacement", e.recordErr(fetch(ctx, oldConn)), codes.Unauthenticated, "revoked")
	if err := fetch(ctx, e.as(repl)); err != nil {
		t.Errorf("replacement's call: %v", err)
	}
	// The unbound token was not used by its refusal.
	_, _, err = join(ctx, e, unbound.GetToken(), "gw-other")
	if err != nil {
		t.Errorf("unbound token after refusal: %v", err)
	}
}

func TestRenewGatewayCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := e.user("root", pki.RoleAdmin)
	tok := createToken(t, e, admin, &outpostv1.CreateJoinTokenRequest{Datacenter: "seoul-1"})
	cred, _, err := join(ctx, e, tok.GetToken(), "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	conn := e.as(cred)

	key, _ := pki.GenerateKey()
	e.addSecretKey(key)
	csrPEM, _ := pki.CreateCSR(key, "gw-1")
	resp, err := outpostv1.NewGatewayServiceClient(conn).RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{CsrPem: string(csrPEM)})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	renewed := e.parseCred([]byte(resp.GetCertificatePem()), key)
	if renewed.Identity != cred.Identity {
		t.Errorf("renewed identity %+v, want %+v", renewed.Identity, cred.Identity)
	}
	if renewed.Leaf().NotAfter.Before(cred.Leaf().NotAfter) {
		t.Errorf("renewed certificate expires %v, before the old %v", renewed.Leaf().NotAfter, cred.Leaf().NotAfter)
	}
	if got := renewed.Leaf().NotAfter.Sub(renewed.Leaf().NotBefore); got < auth.DefaultGatewayCertTTL {
		t.Errorf("renewed certificate lives %v, want at least %v", got, auth.DefaultGatewayCertTTL)
	}
	if renewed.Leaf().SerialNumber.Cmp(cred.Leaf().SerialNumber) == 0 {
		t.Error("renewal reused the serial")
	}
	if err := fetch(ctx, e.as(renewed)); err != nil {
		t.Errorf("call with the renewed certificate: %v", err)
	}
	if err := fetch(ctx, conn); err != nil {
		t.Errorf("the old certificate stops working at renewal: %v", err)
	}

	// Only gateways renew, and only with a valid CSR.
	_, err = outpostv1.NewGatewayServiceClient(admin).RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{CsrPem: string(csrPEM)})
	wantCode(t, "admin renews", e.recordErr(err), codes.PermissionDenied)
	_, err = outpostv1.NewGatewayServiceClient(conn).RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{CsrPem: "junk"})
	wantCode(t, "junk CSR", e.recordErr(err), codes.InvalidArgument)

	// A revoked certificate cannot renew itself back to life.
	if _, err := outpostv1.NewAdminServiceClient(admin).RevokeCredential(ctx, &outpostv1.RevokeCredentialRequest{Serial: pki.SerialString(cred.Leaf())}); err != nil {
		t.Fatal(err)
	}
	_, err = outpostv1.NewGatewayServiceClient(conn).RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{CsrPem: string(csrPEM)})
	wantCode(t, "renew with a revoked certificate", e.recordErr(err), codes.Unauthenticated, "revoked")
}

func TestRedeemIsSingleUseUnderRace(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	token, info, err := e.auth.Tokens().Create(ctx, auth.TokenSpec{Datacenter: "dc", Creator: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.addSecret(token)
	if info.GetExpireTime().AsTime().Sub(e.clock.Now()) != auth.DefaultJoinTokenTTL {
		t.Errorf("default ttl %v, want %v", info.GetExpireTime().AsTime().Sub(e.clock.Now()), auth.DefaultJoinTokenTTL)
	}
	const racers = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     int
		commits int
		errs    []error
	)
	start := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := e.auth.Tokens().Redeem(ctx, token, "gw", func(*outpostv1.JoinToken) ([]clientv3.Op, error) {
				mu.Lock()
				commits++
				mu.Unlock()
				return nil, nil
			})
			e.recordErr(err)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of %d concurrent redeems succeeded, want exactly 1", won, racers)
	}
	for _, err := range errs {
		if !errors.Is(err, auth.ErrTokenUsed) {
			t.Errorf("losing redeem error %v, want ErrTokenUsed", err)
		}
	}
	t.Logf("%d commits for %d racers", commits, racers)

	// A commit error leaves the token unused.
	token2, _, err := e.auth.Tokens().Create(ctx, auth.TokenSpec{Datacenter: "dc"})
	if err != nil {
		t.Fatal(err)
	}
	e.addSecret(token2)
	boom := errors.New("boom")
	if _, err := e.auth.Tokens().Redeem(ctx, token2, "gw", func(*outpostv1.JoinToken) ([]clientv3.Op, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Redeem with failing commit = %v, want boom", err)
	}
	if _, err := e.auth.Tokens().Redeem(ctx, token2, "gw", func(*outpostv1.JoinToken) ([]clientv3.Op, error) { return nil, nil }); err != nil {
		t.Errorf("Redeem after a failed commit: %v", err)
	}
}

func TestTokenSpecValidation(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for name, spec := range map[string]auth.TokenSpec{
		"no datacenter":  {},
		"bad datacenter": {Datacenter: "a/b"},
		"bad name":       {Datacenter: "dc", GatewayName: "-x"},
		"negative ttl":   {Datacenter: "dc", TTL: -time.Second},
		"ttl too long":   {Datacenter: "dc", TTL: auth.MaxJoinTokenTTL + time.Second},
	} {
		tok, _, err := e.auth.Tokens().Create(ctx, spec)
		if e.recordErr(err) == nil {
			e.addSecret(tok)
			t.Errorf("Create(%s) succeeded", name)
		}
	}
}

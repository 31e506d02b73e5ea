package auth_test

import (
	"crypto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestCreateUser(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	admin := outpostv1.NewAdminServiceClient(e.user("root", pki.RoleAdmin))

	// What `outpost user create alice --role deployer` does: make the key
	// locally, send only a CSR, write the credential file.
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.addSecretKey(key)
	csrPEM, err := pki.CreateCSR(key, "alice")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.CreateUser(ctx, &outpostv1.CreateUserRequest{Name: "alice", Role: outpostv1.Role_ROLE_DEPLOYER, CsrPem: string(csrPEM), Ttl: durationpb.New(48 * time.Hour)})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	path := filepath.Join(t.TempDir(), "alice.pem")
	if err := pki.WriteCredential(path, []byte(resp.GetCaPem()), []byte(resp.GetCertificatePem()), key, e.addr); err != nil {
		t.Fatal(err)
	}
	cred, err := pki.LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	want := pki.Identity{Kind: pki.KindUser, Name: "alice", Role: pki.RoleDeployer}
	if cred.Identity != want {
		t.Errorf("identity %+v, want %+v", cred.Identity, want)
	}
	if life := cred.Leaf().NotAfter.Sub(time.Now()); life > 48*time.Hour || life < 47*time.Hour {
		t.Errorf("certificate lives %v more, want about 48h", life)
	}
	rec := resp.GetCredential()
	if rec.GetSerial() != pki.SerialString(cred.Leaf()) || rec.GetIssuer() != "user/root" || rec.GetRole() != outpostv1.Role_ROLE_DEPLOYER {
		t.Errorf("record %v", rec)
	}
	conn := e.as(cred)
	if _, err := outpostv1.NewControlPlaneServiceClient(conn).CreateRollout(ctx, &outpostv1.CreateRolloutRequest{}); err != nil {
		t.Errorf("new deployer's CreateRollout: %v", err)
	}
	if id, _ := e.stub.last(); id != want {
		t.Errorf("handler saw %+v", id)
	}

	for name, req := range map[string]*outpostv1.CreateUserRequest{
		"bad name":     {Name: "al ice", Role: outpostv1.Role_ROLE_VIEWER, CsrPem: string(csrPEM)},
		"no role":      {Name: "x", CsrPem: string(csrPEM)},
		"bad role":     {Name: "x", Role: outpostv1.Role(99), CsrPem: string(csrPEM)},
		"no CSR":       {Name: "x", Role: outpostv1.Role_ROLE_VIEWER},
		"ttl too long": {Name: "x", Role: outpostv1.Role_ROLE_VIEWER, CsrPem: string(csrPEM), Ttl: durationpb.New(auth.MaxUserCertTTL + time.Hour)},
		"negative ttl": {Name: "x", Role: outpostv1.Role_ROLE_VIEWER, CsrPem: string(csrPEM), Ttl: durationpb.New(-time.Hour)},
	} {
		_, err := admin.CreateUser(ctx, req)
		wantCode(t, name, e.recordErr(err), codes.InvalidArgument)
	}
	// The default lifetime.
	resp, err = admin.CreateUser(ctx, &outpostv1.CreateUserRequest{Name: "bob", Role: outpostv1.Role_ROLE_VIEWER, CsrPem: string(csrPEM)})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetCredential().GetExpireTime().AsTime().Sub(resp.GetCredential().GetIssueTime().AsTime()); got.Round(time.Minute) != auth.DefaultUserCertTTL {
		t.Errorf("default ttl %v, want %v", got, auth.DefaultUserCertTTL)
	}
}

func TestListCredentialsAndTokens(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	adminConn := e.user("root", pki.RoleAdmin)
	admin := outpostv1.NewAdminServiceClient(adminConn)
	for _, n := range []string{"u1", "u2", "u3"} {
		e.credential(pki.Identity{Kind: pki.KindUser, Name: n, Role: pki.RoleViewer}, time.Hour)
	}
	e.credential(pki.Identity{Kind: pki.KindGateway, Name: "g1", Datacenter: "dc"}, time.Hour)

	list := func(kind outpostv1.CredentialKind) []string {
		var names []string
		token := ""
		for page := 0; page < 20; page++ {
			resp, err := admin.ListCredentials(ctx, &outpostv1.ListCredentialsRequest{PageSize: 1, PageToken: token, Kind: kind})
			if err != nil {
				t.Fatalf("ListCredentials: %v", err)
			}
			for _, c := range resp.GetCredentials() {
				names = append(names, c.GetName())
			}
			if token = resp.GetNextPageToken(); token == "" {
				sort.Strings(names)
				return names
			}
		}
		t.Fatal("ListCredentials did not end")
		return nil
	}
	if diff := cmp.Diff([]string{"g1", "root", "u1", "u2", "u3"}, list(outpostv1.CredentialKind_CREDENTIAL_KIND_UNSPECIFIED)); diff != "" {
		t.Errorf("all credentials (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"g1"}, list(outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY)); diff != "" {
		t.Errorf("gateway credentials (-want +got):\n%s", diff)
	}
	_, err := admin.ListCredentials(ctx, &outpostv1.ListCredentialsRequest{PageToken: "bm90IG91cnM"})
	wantCode(t, "foreign page token", e.recordErr(err), codes.InvalidArgument)
	_, err = admin.ListCredentials(ctx, &outpostv1.ListCredentialsRequest{PageSize: -1})
	wantCode(t, "negative page size", e.recordErr(err), codes.InvalidArgument)

	// Tokens in every state; the list never holds a secret.
	used := createToken(t, e, adminConn, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc"})
	if _, _, err := join(ctx, e, used.GetToken(), "g2"); err != nil {
		t.Fatal(err)
	}
	revoked := createToken(t, e, adminConn, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc"})
	if _, err := admin.RevokeJoinToken(ctx, &outpostv1.RevokeJoinTokenRequest{Id: revoked.GetJoinToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	expiring := createToken(t, e, adminConn, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc", Ttl: durationpb.New(time.Minute)})
	active := createToken(t, e, adminConn, &outpostv1.CreateJoinTokenRequest{Datacenter: "dc", Ttl: durationpb.New(time.Hour), GatewayName: "g9"})
	e.clock.Advance(2 * time.Minute)

	resp, err := admin.ListJoinTokens(ctx, &outpostv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]outpostv1.JoinTokenState{}
	for _, tok := range resp.GetJoinTokens() {
		got[tok.GetId()] = tok.GetState()
	}
	want := map[string]outpostv1.JoinTokenState{
		used.GetJoinToken().GetId():     outpostv1.JoinTokenState_JOIN_TOKEN_STATE_USED,
		revoked.GetJoinToken().GetId():  outpostv1.JoinTokenState_JOIN_TOKEN_STATE_REVOKED,
		expiring.GetJoinToken().GetId(): outpostv1.JoinTokenState_JOIN_TOKEN_STATE_EXPIRED,
		active.GetJoinToken().GetId():   outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("token states (-want +got):\n%s", diff)
	}
	text := prototext.Format(resp)
	for _, tok := range []*outpostv1.CreateJoinTokenResponse{used, revoked, expiring, active} {
		secret := strings.SplitN(strings.TrimPrefix(tok.GetToken(), pki.JoinTokenPrefix), ".", 2)[0]
		if strings.Contains(text, secret) {
			t.Error("ListJoinTokens shows a token's secret")
		}
	}
	for _, tok := range resp.GetJoinTokens() {
		if tok.GetId() == used.GetJoinToken().GetId() && tok.GetUsedBy() != "g2" {
			t.Errorf("used token used_by %q, want g2", tok.GetUsedBy())
		}
	}

	// The secret stays out of etcd as well.
	kvs, err := e.store.Client().Get(ctx, store.JoinTokensPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs.Kvs {
		for _, tok := range []*outpostv1.CreateJoinTokenResponse{used, revoked, expiring, active} {
			secret := strings.SplitN(strings.TrimPrefix(tok.GetToken(), pki.JoinTokenPrefix), ".", 2)[0]
			if strings.Contains(string(kv.Key)+string(kv.Value), secret) {
				t.Errorf("etcd key %s holds a token secret", kv.Key)
			}
		}
	}

	for name, req := range map[string]*outpostv1.CreateJoinTokenRequest{
		"no datacenter":  {},
		"bad datacenter": {Datacenter: "a b"},
		"bad name":       {Datacenter: "dc", GatewayName: "a/b"},
		"ttl too long":   {Datacenter: "dc", Ttl: durationpb.New(auth.MaxJoinTokenTTL + time.Second)},
	} {
		_, err := admin.CreateJoinToken(ctx, req)
		wantCode(t, name, e.recordErr(err), codes.InvalidArgument)
	}
	for name, id := range map[string]string{"unknown": "0123456789abcdef", "malformed": "../../x", "short": "ab"} {
		_, err := admin.RevokeJoinToken(ctx, &outpostv1.RevokeJoinTokenRequest{Id: id})
		wantCode(t, "RevokeJoinToken "+name, e.recordErr(err), codes.NotFound)
	}
}

func TestEnsureAdminCredential(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), auth.AdminCredentialFile)

	written, err := e.auth.EnsureAdminCredential(ctx, path, e.addr)
	if err != nil || !written {
		t.Fatalf("first EnsureAdminCredential = %v, %v; want written", written, err)
	}
	cred, err := pki.LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	e.addSecretKey(cred.Certificate.PrivateKey.(crypto.Signer))
	if want := (pki.Identity{Kind: pki.KindUser, Name: auth.AdminName, Role: pki.RoleAdmin}); cred.Identity != want || cred.Server != e.addr {
		t.Errorf("admin credential %+v server %q", cred.Identity, cred.Server)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
	// It works, as admin.
	if _, err := outpostv1.NewAdminServiceClient(e.as(cred)).ListCredentials(ctx, &outpostv1.ListCredentialsRequest{}); err != nil {
		t.Errorf("admin credential's call: %v", err)
	}
	serial := pki.SerialString(cred.Leaf())

	serialOf := func() string {
		t.Helper()
		c, err := pki.LoadCredential(path)
		if err != nil {
			t.Fatal(err)
		}
		e.addSecretKey(c.Certificate.PrivateKey.(crypto.Signer))
		return pki.SerialString(c.Leaf())
	}
	if written, err := e.auth.EnsureAdminCredential(ctx, path, e.addr); err != nil || written {
		t.Errorf("second EnsureAdminCredential = %v, %v; want untouched", written, err)
	}
	if written, err := e.auth.EnsureAdminCredential(ctx, path, "127.0.0.1:1"); err != nil || !written || serialOf() != serial {
		t.Errorf("new server address: written %v, err %v; want the same certificate rewritten", written, err)
	}
	if c, _ := pki.LoadCredential(path); c.Server != "127.0.0.1:1" {
		t.Errorf("server %q after address change", c.Server)
	}

	// Revoked: replaced.
	if _, err := e.auth.Revoke(ctx, serial, "test"); err != nil {
		t.Fatal(err)
	}
	if written, err := e.auth.EnsureAdminCredential(ctx, path, e.addr); err != nil || !written {
		t.Fatalf("after revocation = %v, %v; want written", written, err)
	}
	serial2 := serialOf()
	if serial2 == serial {
		t.Error("revoked admin credential kept")
	}

	// Due for renewal: replaced.
	e.clock.Advance(auth.AdminCertTTL * 2 / 3)
	if written, err := e.auth.EnsureAdminCredential(ctx, path, e.addr); err != nil || !written || serialOf() == serial2 {
		t.Errorf("at renewal time = %v, %v; want a new certificate", written, err)
	}
	e.clock.Advance(-auth.AdminCertTTL * 2 / 3)

	// Garbage or another CA's credential: replaced.
	if err := os.WriteFile(path, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if written, err := e.auth.EnsureAdminCredential(ctx, path, e.addr); err != nil || !written {
		t.Errorf("over junk = %v, %v; want written", written, err)
	}
}

func TestServerHostsAndDialAddress(t *testing.T) {
	hosts := auth.ServerHosts("10.1.2.3:7443", "cp.example")
	for _, want := range []string{"localhost", "127.0.0.1", "::1", "10.1.2.3", "cp.example"} {
		found := false
		for _, h := range hosts {
			found = found || h == want
		}
		if !found {
			t.Errorf("ServerHosts lacks %q: %v", want, hosts)
		}
	}
	for _, h := range auth.ServerHosts("0.0.0.0:7443") {
		if h == "0.0.0.0" {
			t.Error("ServerHosts includes the unspecified address")
		}
	}
	for in, want := range map[string]string{
		":7443":          "127.0.0.1:7443",
		"0.0.0.0:7443":   "127.0.0.1:7443",
		"[::]:7443":      "127.0.0.1:7443",
		"10.0.0.1:7443":  "10.0.0.1:7443",
		"cp.example:443": "cp.example:443",
	} {
		if got := auth.LocalDialAddress(in); got != want {
			t.Errorf("LocalDialAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

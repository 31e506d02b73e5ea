package enroll

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Join exchanges a join token for a gateway credential at the control
// plane addr. It makes a new key, trusts the control plane only if it
// presents the CA whose fingerprint the token carries, and returns the
// credential with addr recorded as its server. opts are extra dial options;
// the transport credentials are Join's own.
func Join(ctx context.Context, addr, token, name string, opts ...grpc.DialOption) (*pki.Credential, error) {
	tok, err := pki.ParseJoinToken(token)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, name)
	if err != nil {
		return nil, err
	}
	opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(pki.JoinTLSConfig(tok.CAFingerprint, ""))))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer conn.Close()
	resp, err := outpostv1.NewGatewayServiceClient(conn).JoinGateway(ctx, &outpostv1.JoinGatewayRequest{
		Token:  token,
		Name:   name,
		CsrPem: string(csr),
	})
	if err != nil {
		return nil, fmt.Errorf("join %s as gateway %q: %w", addr, name, err)
	}
	cred, err := pki.NewCredential([]byte(resp.GetCaPem()), []byte(resp.GetCertificatePem()), key, addr)
	if err != nil {
		return nil, fmt.Errorf("join: the control plane's answer: %w", err)
	}
	return cred, nil
}

// Renew asks the control plane for a fresh certificate of the gateway
// whose current certificate authenticates client's connection, with a new
// key. The returned credential records server. The old certificate stays
// valid until it expires; connections made with it continue, so redial to
// use the new one.
func Renew(ctx context.Context, client outpostv1.GatewayServiceClient, server string) (*pki.Credential, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, "")
	if err != nil {
		return nil, err
	}
	resp, err := client.RenewGatewayCertificate(ctx, &outpostv1.RenewGatewayCertificateRequest{CsrPem: string(csr)})
	if err != nil {
		return nil, fmt.Errorf("renew gateway certificate: %w", err)
	}
	cred, err := pki.NewCredential([]byte(resp.GetCaPem()), []byte(resp.GetCertificatePem()), key, server)
	if err != nil {
		return nil, fmt.Errorf("renew: the control plane's answer: %w", err)
	}
	return cred, nil
}

// ErrNeedToken is returned by LoadOrJoin when there is no usable
// credential and no join token to get one.
var ErrNeedToken = errors.New("no usable gateway credential and no join token")

// LoadOrJoin returns the gateway credential stored at path. When there is
// none, or it has expired (by now), it joins addr as name with token,
// writes the new credential to path (0600) and reports joined. A usable
// credential wins over a token, which then stays unused. A credential for
// another gateway name is an error: the file belongs to someone else.
func LoadOrJoin(ctx context.Context, path, addr, name, token string, now time.Time, opts ...grpc.DialOption) (cred *pki.Credential, joined bool, err error) {
	cred, err = pki.LoadCredential(path)
	why := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		why = "no credential at " + path
	case err != nil:
		// An unreadable or malformed file is not replaced silently.
		return nil, false, err
	case cred.Identity.Kind != pki.KindGateway || cred.Identity.Name != name:
		return nil, false, fmt.Errorf("credential %s is for %s, not gateway %q", path, cred.Identity, name)
	case !now.Before(cred.Leaf().NotAfter):
		why = fmt.Sprintf("credential %s expired at %s", path, cred.Leaf().NotAfter.UTC().Format(time.RFC3339))
	default:
		return cred, false, nil
	}
	if token == "" {
		return nil, false, fmt.Errorf("%w: %s; create one with: outpost token create --datacenter DC --gateway-name %s", ErrNeedToken, why, name)
	}
	cred, err = Join(ctx, addr, token, name, opts...)
	if err != nil {
		return nil, false, err
	}
	if err := cred.Write(path); err != nil {
		return nil, false, err
	}
	return cred, true, nil
}

// CreateUser makes a key, asks the control plane (as an admin, through
// client) for a certificate of user name with role, and writes the
// credential to path (0600) naming server. ttl 0 means the server's
// default. The key never leaves this process except into path.
func CreateUser(ctx context.Context, client outpostv1.AdminServiceClient, name string, role pki.Role, ttl time.Duration, path, server string) (*pki.Credential, error) {
	roles := map[pki.Role]outpostv1.Role{
		pki.RoleViewer:   outpostv1.Role_ROLE_VIEWER,
		pki.RoleDeployer: outpostv1.Role_ROLE_DEPLOYER,
		pki.RoleApprover: outpostv1.Role_ROLE_APPROVER,
		pki.RoleAdmin:    outpostv1.Role_ROLE_ADMIN,
	}
	r, ok := roles[role]
	if !ok {
		return nil, fmt.Errorf("create user: invalid role %v", role)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, name)
	if err != nil {
		return nil, err
	}
	req := &outpostv1.CreateUserRequest{Name: name, Role: r, CsrPem: string(csr)}
	if ttl != 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := client.CreateUser(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create user %q: %w", name, err)
	}
	cred, err := pki.NewCredential([]byte(resp.GetCaPem()), []byte(resp.GetCertificatePem()), key, server)
	if err != nil {
		return nil, fmt.Errorf("create user: the control plane's answer: %w", err)
	}
	if err := cred.Write(path); err != nil {
		return nil, err
	}
	return cred, nil
}

// Dial connects to the control plane at addr with cred (TLS 1.3, the
// server verified against cred's CAs under pki.ServerName). opts are
// extra dial options.
func Dial(addr string, cred *pki.Credential, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLSConfig(cred, ""))))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

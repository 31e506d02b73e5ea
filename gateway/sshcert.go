package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshca"
	"github.com/outposthq/outpost/gateway/sshexec"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// A gateway with an SSH user CA (SSHConfig.CAKeyFile) gives each node
// deployment a key pair and certificate of its own. The certificate
// travels with the deployment's context, from runTask to every dial the
// deployer makes for it (the first, a reconnection, a cleanup), and no
// connection outlives its deployment, so no login ever uses another
// deployment's certificate, nor one past its expiry: the deployment's
// context ends before the certificate does, leaving time to clean up or
// roll back within its validity.

// certSkew is kept between the end of a deployment's time and its
// certificate's expiry, for a node whose clock runs ahead of the gateway's.
// A variable so that a test can reach a deployment's time limit quickly.
var certSkew = time.Minute

// minDeployTime is the least time a deployment must have before its
// certificate's reserve for cleanup begins.
var minDeployTime = time.Minute

// loadCA reads the SSH user CA, when there is one; now is the gateway's
// clock.
func loadCA(c SSHConfig, now func() time.Time) (*sshca.Authority, error) {
	if c.CAKeyFile == "" {
		return nil, nil
	}
	key, err := sshca.LoadCA(c.CAKeyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	a, err := sshca.New(sshca.Config{CA: key, SourceAddresses: c.CertSourceAddresses, Now: now})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return a, nil
}

// deployCert is one deployment's certificate, issued at its first login,
// so that an assignment that never logs in (an HTTP health check) mints
// none.
type deployCert struct {
	req sshca.Request

	once      sync.Once
	cred      *sshca.Credential // set by once
	err       error             // set by once
	announced atomic.Bool       // the first login with it was logged
}

type deployCertKey struct{}

// withCertificate, when the gateway has a CA, returns a context that
// carries a's certificate (issued at its first login, valid until the
// validity from now) and ends early enough to clean up or roll back
// within that validity. cancel must be called; without a CA it does
// nothing.
func (g *Gateway) withCertificate(ctx context.Context, a *outpostv1.Assignment) (_ context.Context, cancel context.CancelFunc, _ error) {
	if g.ca == nil {
		return ctx, func() {}, nil
	}
	user, err := g.nodeUser(a.GetNode())
	if err != nil {
		return ctx, func() {}, err
	}
	validity := g.cfg.SSH.CertValidity
	// A rollback after the deadline runs for the cleanup timeout plus the
	// health timeout, and may have to log in again.
	health := a.GetDeploy().GetHealth().GetTimeout().AsDuration()
	limit := validity - certSkew - deployer.DefaultCleanupTimeout - health
	if limit < minDeployTime {
		return ctx, func() {}, fmt.Errorf("SSH certificate: the health timeout %v leaves this deployment no time within the certificate's validity %v (--ssh-cert-validity)", health, validity)
	}
	validBefore := g.cfg.Now().Add(validity)
	ctx = context.WithValue(ctx, deployCertKey{}, &deployCert{req: sshca.Request{
		User:         user,
		NodeAddress:  a.GetNode().GetAddress(),
		RolloutID:    a.GetRolloutId(),
		NodeID:       a.GetNode().GetId(),
		AssignmentID: a.GetAssignmentId(),
		Gateway:      g.cfg.Name,
		ValidBefore:  validBefore,
	}})
	// Relative to now, so that it holds whatever clock Config.Now is.
	ctx, cancel = context.WithTimeoutCause(ctx, limit, fmt.Errorf(
		"deployment time limit %v reached: its SSH certificate expires at %s (--ssh-cert-validity %v)",
		limit, validBefore.UTC().Format(time.RFC3339), validity))
	return ctx, cancel, nil
}

// certAuth puts the deployment's certificate, when ctx carries one, first
// among auth's credentials, issuing it on the first call.
func (g *Gateway) certAuth(ctx context.Context, auth sshexec.Auth) (sshexec.Auth, *deployCert, error) {
	dc, _ := ctx.Value(deployCertKey{}).(*deployCert)
	if dc == nil {
		return auth, nil, nil
	}
	dc.once.Do(func() {
		dc.cred, dc.err = g.ca.Issue(ctx, dc.req)
		if dc.err == nil {
			g.met.sshCertsIssued.Inc()
		}
	})
	if dc.err != nil {
		return auth, nil, fmt.Errorf("SSH certificate: %w", dc.err)
	}
	auth.Signers = slices.Concat([]ssh.Signer{dc.cred.Signer}, auth.Signers)
	return auth, dc, nil
}

// certAttrs describes a certificate for a log line: never a key.
func certAttrs(c *ssh.Certificate) []any {
	return []any{
		"key_id", c.KeyId,
		"serial", c.Serial,
		"principal", c.ValidPrincipals,
		"valid_after", time.Unix(int64(c.ValidAfter), 0).UTC(),
		"valid_before", time.Unix(int64(c.ValidBefore), 0).UTC(),
		"source_address", c.CriticalOptions["source-address"],
		"ca", ssh.FingerprintSHA256(c.SignatureKey),
	}
}

// noteCertLogin logs, once per deployment, how its first login went: with
// the certificate (key id, serial, validity), or, loudly, with another
// credential.
func (g *Gateway) noteCertLogin(dc *deployCert, n *outpostv1.Node) {
	if dc == nil || dc.announced.Swap(true) {
		return
	}
	log := g.log.With("node_id", n.GetId())
	if !dc.cred.Used() {
		// The node took another credential (its sshd does not trust the
		// CA yet, say): the key id is then in no sshd log.
		log.Warn("ssh login did not use the certificate; the node accepted another credential (does its sshd have TrustedUserCAKeys?)", "key_id", dc.cred.Cert.KeyId)
		return
	}
	g.met.sshCertLogins.Inc()
	log.Info("ssh login with certificate", certAttrs(dc.cred.Cert)...)
}
